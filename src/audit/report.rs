//! The report: a table like kubectl's, or JSON / YAML for machines (a list of findings
//! with a stable schema), and the exit status.

use super::detect::Finding;

/// How the findings are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `NAMESPACE KIND NAME RULE FINDING FIX`, aligned, as kubectl prints.
    Table,
    Json,
    Yaml,
}

/// The result of a run, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Findings left (after `--fix`, what it could not fix).
    pub remaining: usize,
}

impl Verdict {
    /// 0 when nothing is found, 1 when something is (2, an error, is the caller's).
    pub fn exit_code(self) -> u8 {
        u8::from(self.remaining > 0)
    }
}

/// Why the report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot render the report as JSON")]
    Json(#[from] serde_json::Error),
    #[error("cannot render the report as YAML: {0}")]
    Yaml(String),
}

/// Sorts findings into report order: namespace, kind, name, rule.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
}

/// The report text. An empty table is empty (the caller says "No findings." on stderr,
/// as kubectl says "No resources found"); an empty JSON or YAML report is `[]`.
pub fn render(findings: &[Finding], format: Format) -> Result<String, RenderError> {
    Ok(match format {
        Format::Table => table(findings),
        Format::Json => serde_json::to_string_pretty(findings)? + "\n",
        Format::Yaml => {
            if findings.is_empty() {
                "[]\n".to_owned()
            } else {
                serde_saphyr::to_string(&findings).map_err(|e| RenderError::Yaml(e.to_string()))?
            }
        }
    })
}

const HEADERS: [&str; 6] = ["NAMESPACE", "KIND", "NAME", "RULE", "FINDING", "FIX"];

fn table(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let rows: Vec<[&str; 6]> = findings
        .iter()
        .map(|f| {
            [
                f.namespace.as_str(),
                f.kind,
                f.name.as_str(),
                f.rule,
                f.reason.as_str(),
                f.fix.text(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&HEADERS).chain(rows.iter()) {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::detect::{Detector, FindingType, Fix};
    use super::*;
    use crate::engine::Engine;
    use serde_json::json;

    fn findings() -> Vec<Finding> {
        let d = Detector::new(Engine::default());
        let svc = json!({"metadata": {"namespace": "dd", "name": "datadog-agent", "resourceVersion": "1"},
                         "spec": {"ports": [{"name": "traceport", "port": 8126}]}});
        let cj = json!({"metadata": {"namespace": "batch", "name": "report"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        let job = json!({"metadata": {"namespace": "batch", "name": "report-1"}, "spec": {"template": {}}});
        let mut all = vec![
            d.service(&svc, &mut Vec::new()).unwrap(),
            d.cronjob_run("Job", &job, "report").unwrap(),
            d.cronjob(&cj, &mut Vec::new()).unwrap(),
        ];
        sort(&mut all);
        all
    }

    #[test]
    fn table_is_aligned_and_sorted() {
        let text = render(&findings(), Format::Table).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("NAMESPACE   KIND      NAME            RULE          FINDING"),
            "{text}"
        );
        assert!(
            lines[1]
                .starts_with("batch       CronJob   report          cronjob-app   no app label"),
            "{text}"
        );
        assert!(
            lines[2].starts_with(
                "batch       Job       report-1        cronjob-app   run of cronjob/report"
            ),
            "{text}"
        );
        assert!(
            lines[3].starts_with(
                "dd          Service   datadog-agent   trace-port    trace port traceport/8126"
            ),
            "{text}"
        );
        let fix_col = lines[0].find("FIX").unwrap();
        assert_eq!(
            &lines[2][fix_col..],
            "later runs get the label once cronjob/report is fixed"
        );
        assert!(
            lines[3][fix_col..]
                .starts_with("kubectl -n dd patch service datadog-agent --type=json -p '[")
        );
        assert_eq!(render(&[], Format::Table).unwrap(), "");
    }

    #[test]
    fn json_schema_is_stable() {
        let text = render(&findings(), Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = &v[0];
        let keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "finding",
                "fix",
                "kind",
                "name",
                "namespace",
                "owner",
                "patch",
                "reason",
                "rule"
            ]
        );
        assert_eq!(first["finding"], "cronjob-app-missing");
        assert_eq!(first["fix"]["action"], "patch");
        assert_eq!(first["fix"]["error"], serde_json::Value::Null);
        assert_eq!(first["owner"], serde_json::Value::Null);
        assert_eq!(v[1]["finding"], "cronjob-run-unlabelled");
        assert_eq!(v[1]["owner"], json!({"kind": "CronJob", "name": "report"}));
        assert_eq!(v[1]["fix"]["action"], "none");
        assert_eq!(v[1]["patch"], json!([]));
        assert_eq!(
            v[2]["patch"],
            json!([{"op": "add", "path": "/spec/ports/0/appProtocol", "value": "tcp"}])
        );
        assert_eq!(render(&[], Format::Json).unwrap(), "[]\n");
    }

    #[test]
    fn yaml_says_the_same_as_json() {
        let all = findings();
        let yaml = render(&all, Format::Yaml).unwrap();
        let from_yaml: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let from_json: serde_json::Value =
            serde_json::from_str(&render(&all, Format::Json).unwrap()).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(render(&[], Format::Yaml).unwrap(), "[]\n");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Verdict { remaining: 0 }.exit_code(), 0);
        assert_eq!(Verdict { remaining: 3 }.exit_code(), 1);
    }

    #[test]
    fn fix_text_falls_back_to_the_note() {
        let f = Fix::none("n".into());
        assert_eq!(f.text(), "n");
        assert!(FindingType::SidecarEnvMissing.needs_owner());
    }
}
