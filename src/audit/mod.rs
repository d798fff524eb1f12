//! `tracepatch audit`: what the webhook would change in a running cluster, and what it
//! cannot repair at admission because the object already exists.
//!
//! A webhook acts only on objects admitted after it is installed. The audit reads Pods,
//! Services and CronJobs through the API (paginated, each page read one object at a
//! time: in memory a page's JSON text and one object; of the objects only the findings
//! are kept), asks the rules what they would change ([`detect`], the same [`Engine`] as
//! the webhook), and for pods that already run, names the owner to restart
//! ([`owners`]). `--fix` patches what can change in place ([`fix`]: Services and
//! CronJobs). Namespaces and objects that opted out, and the excluded namespaces, are
//! left out, as the webhook's selectors leave them out.
//!
//! Order of the scan: namespaces (which opted out), CronJobs (which lack the label),
//! Jobs (only when some CronJob lacks it: its runs), Services, Pods (the runs' pods, and
//! each pod's owner walk when a finding needs a restart).

mod api;
mod detect;
mod fix;
mod owners;
mod report;
#[cfg(test)]
mod testing;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::engine::Engine;
use api::{ApiError, Cluster, KubeCluster, ListQuery, Res};
use detect::{Detector, Finding, FindingType, FixAction, JOB, POD, meta};
use fix::Applied;
use owners::{PodRef, Resolver, controller_of};
use report::RenderError;

pub use report::{Format, Verdict};

/// Which namespaces to audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (`-A`).
    All,
    /// One namespace (`-n NS`).
    Namespace(String),
    /// The namespace of the kubeconfig context (or of the pod, in a cluster).
    Context,
}

/// What `tracepatch audit` was asked.
#[derive(Clone, Debug)]
pub struct Options {
    pub scope: Scope,
    /// A label selector for the Pods, Services and CronJobs audited.
    pub selector: Option<String>,
    /// Namespaces never audited.
    pub exclude_namespaces: Vec<String>,
    pub format: Format,
    /// Patch what can change in place.
    pub fix: bool,
    /// With `fix`: show the patches, send nothing.
    pub dry_run: bool,
    /// Objects per list page.
    pub chunk_size: u32,
}

/// Why the audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot configure the Kubernetes client (kubeconfig or in-cluster)")]
    Client(#[source] kube::Error),
    #[error("cannot {action} {what}")]
    Api {
        action: &'static str,
        what: String,
        #[source]
        source: ApiError,
    },
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot write the report")]
    Output(#[source] std::io::Error),
}

/// What the scan says as it goes.
#[derive(Debug)]
enum Event<'a> {
    /// A rule's warning about an object, as the webhook would give it.
    Warning(&'a str),
    /// Something the user should know (a namespace left out, a fix done).
    Note(&'a str),
    /// A page was read.
    Scanned {
        what: &'static str,
        seen: usize,
        findings: usize,
    },
}

/// The scan's parameters, with the namespace resolved.
#[derive(Clone, Debug)]
struct ScanOptions {
    namespace: Option<String>,
    selector: Option<String>,
    exclude: Vec<String>,
    chunk_size: u32,
}

/// Runs the audit (and the fixes) and prints the report on standard output; warnings,
/// progress and fix results go to standard error.
pub fn run(engine: Engine, options: Options) -> Result<Verdict, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(run_async(engine, options))
}

async fn run_async(engine: Engine, options: Options) -> Result<Verdict, Error> {
    let cluster = KubeCluster::connect().await.map_err(Error::Client)?;
    let namespace = match &options.scope {
        Scope::All => None,
        Scope::Namespace(ns) => Some(ns.clone()),
        Scope::Context => Some(cluster.default_namespace().to_owned()),
    };
    let scan_options = ScanOptions {
        namespace,
        selector: options.selector.clone().filter(|s| !s.is_empty()),
        exclude: options.exclude_namespaces.clone(),
        chunk_size: options.chunk_size.max(1),
    };
    let detector = Detector::new(engine);
    let mut ui = Stderr::new(std::io::stderr().is_terminal());
    let scanned = scan(&cluster, &detector, &scan_options, &mut |e| ui.event(e)).await;
    ui.clear();
    let mut findings = scanned?;
    if options.fix {
        findings = fix_all(&cluster, &detector, findings, options.dry_run, &mut |e| {
            ui.event(e)
        })
        .await;
    }
    report::sort(&mut findings);
    let text = report::render(&findings, options.format)?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `tracepatch audit | head` is not an error.
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(Error::Output(e)),
    }
    if findings.is_empty() && options.format == Format::Table {
        ui.event(Event::Note("No findings."));
    }
    if options.fix {
        let commands: BTreeSet<&str> = findings
            .iter()
            .filter(|f| matches!(f.fix.action, FixAction::Restart | FixAction::DeletePod))
            .filter_map(|f| f.fix.command.as_deref())
            .collect();
        if !commands.is_empty() {
            ui.event(Event::Note(
                "Pods are never changed in place; to finish, restart (or delete) them:",
            ));
            for c in commands {
                ui.event(Event::Note(&format!("  {c}")));
            }
        }
    }
    Ok(Verdict {
        remaining: findings.len(),
    })
}

/// Standard error: warnings and notes one line each, and on a terminal a progress line
/// rewritten in place (`\r`) and cleared before any other line.
struct Stderr {
    progress: bool,
    shown: bool,
}

impl Stderr {
    fn new(progress: bool) -> Self {
        Stderr {
            progress,
            shown: false,
        }
    }

    fn event(&mut self, event: Event<'_>) {
        let mut err = std::io::stderr().lock();
        match event {
            Event::Scanned {
                what,
                seen,
                findings,
            } => {
                if self.progress {
                    let _ = write!(
                        err,
                        "\r\x1b[2Kaudit: {seen} {what} read, {findings} findings so far"
                    );
                    let _ = err.flush();
                    self.shown = true;
                }
            }
            Event::Warning(line) => {
                drop(err);
                self.clear();
                let _ = writeln!(std::io::stderr().lock(), "Warning: {line}");
            }
            Event::Note(line) => {
                drop(err);
                self.clear();
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

/// Pages of one list, one at a time, each read one object at a time
/// ([`api::read_list`]): in memory, a page's JSON text and one object, never a page of
/// objects; of the objects, only the findings are kept.
struct Pager<'a> {
    res: Res,
    namespace: Option<&'a str>,
    selector: Option<&'a str>,
    limit: u32,
    token: Option<String>,
    done: bool,
}

impl<'a> Pager<'a> {
    fn new(res: Res, options: &'a ScanOptions, selector: bool) -> Self {
        Pager {
            res,
            namespace: options.namespace.as_deref(),
            selector: options.selector.as_deref().filter(|_| selector),
            limit: options.chunk_size,
            token: None,
            done: false,
        }
    }

    fn error(&self, action: &'static str, source: ApiError) -> Error {
        Error::Api {
            action,
            what: match self.namespace {
                Some(ns) => format!("{} in namespace {ns}", self.res.plural()),
                None => format!("{} in all namespaces", self.res.plural()),
            },
            source,
        }
    }

    /// The next page's JSON, for [`Pager::read`]; `None` after the last.
    async fn next<C: Cluster>(&mut self, cluster: &C) -> Result<Option<Vec<u8>>, Error> {
        if self.done {
            return Ok(None);
        }
        let query = ListQuery {
            selector: self.selector,
            limit: self.limit,
            continue_token: self.token.as_deref(),
        };
        let body = cluster
            .list(self.res, self.namespace, query)
            .await
            .map_err(|e| self.error("list", e))?;
        // Until `read` finds a continue token.
        self.done = true;
        Ok(Some(body))
    }

    /// Hands each object of a page to `each`, and notes where the next page starts.
    /// Returns how many objects the page held.
    fn read(&mut self, body: &[u8], each: &mut dyn FnMut(&Value)) -> Result<usize, Error> {
        let mut n = 0;
        let token = api::read_list(body, &mut |obj| {
            n += 1;
            each(&obj);
        })
        .map_err(|e| self.error("read", e))?;
        self.done = token.is_none();
        self.token = token;
        Ok(n)
    }
}

/// Reads every audited object once and returns the findings.
async fn scan<C: Cluster>(
    cluster: &C,
    detector: &Detector,
    options: &ScanOptions,
    events: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Finding>, Error> {
    let mut skipped: HashSet<String> = options.exclude.iter().cloned().collect();
    let opt_out = detector.config().opt_out.label.as_str();
    match options.namespace.as_deref() {
        Some(ns) if skipped.contains(ns) => {
            events(Event::Note(&format!(
                "namespace {ns} is excluded (--exclude-namespace): nothing audited"
            )));
            return Ok(Vec::new());
        }
        Some(ns) => {
            let obj = cluster
                .get(Res::Namespace, None, ns)
                .await
                .map_err(|source| Error::Api {
                    action: "get",
                    what: format!("namespace {ns}"),
                    source,
                })?;
            if obj.as_ref().is_some_and(|o| detector.opted_out(o)) {
                events(Event::Note(&format!(
                    "namespace {ns} opted out ({opt_out}: \"false\"): nothing audited"
                )));
                return Ok(Vec::new());
            }
        }
        None => {
            let mut pager = Pager::new(Res::Namespace, options, false);
            while let Some(body) = pager.next(cluster).await? {
                pager.read(&body, &mut |ns| {
                    if detector.opted_out(ns) {
                        skipped.insert(meta(ns, "name").to_owned());
                    }
                })?;
            }
        }
    }
    let audited = |obj: &Value| !skipped.contains(meta(obj, "namespace"));
    let mut findings = Vec::new();
    let mut warnings = Vec::new();

    // CronJobs, and which lack the label (by uid, as their Jobs name them).
    let mut unlabelled: HashMap<String, String> = HashMap::new();
    let mut pager = Pager::new(Res::CronJob, options, true);
    let mut seen = 0;
    while let Some(body) = pager.next(cluster).await? {
        seen += pager.read(&body, &mut |cj| {
            if !audited(cj) {
                return;
            }
            if let Some(f) = detector.cronjob(cj, &mut warnings) {
                unlabelled.insert(meta(cj, "uid").to_owned(), f.name.clone());
                findings.push(f);
            }
            say(&mut warnings, events);
        })?;
        events(Event::Scanned {
            what: "cronjobs",
            seen,
            findings: findings.len(),
        });
    }

    // Their runs: Jobs whose controller is such a CronJob (by uid).
    let mut runs: HashMap<String, String> = HashMap::new();
    if !unlabelled.is_empty() {
        let mut pager = Pager::new(Res::Job, options, false);
        let mut seen = 0;
        while let Some(body) = pager.next(cluster).await? {
            seen += pager.read(&body, &mut |job| {
                if !audited(job) {
                    return;
                }
                let Some(cronjob) = controller_of(job)
                    .filter(|c| c.group == "batch" && c.kind == "CronJob")
                    .and_then(|c| unlabelled.get(&c.uid))
                else {
                    return;
                };
                runs.insert(meta(job, "uid").to_owned(), cronjob.clone());
                findings.extend(detector.cronjob_run(JOB, job, cronjob));
            })?;
            events(Event::Scanned {
                what: "jobs",
                seen,
                findings: findings.len(),
            });
        }
    }

    let mut pager = Pager::new(Res::Service, options, true);
    let mut seen = 0;
    while let Some(body) = pager.next(cluster).await? {
        seen += pager.read(&body, &mut |svc| {
            if audited(svc) {
                findings.extend(detector.service(svc, &mut warnings));
                say(&mut warnings, events);
            }
        })?;
        events(Event::Scanned {
            what: "services",
            seen,
            findings: findings.len(),
        });
    }

    // Pods: the findings of a page first, then the owner walk of those that need one
    // (API calls, which cannot happen while the page is being read).
    let mut resolver = Resolver::default();
    let mut pager = Pager::new(Res::Pod, options, true);
    let mut seen = 0;
    while let Some(body) = pager.next(cluster).await? {
        let mut walks: Vec<(PodRef, Vec<Finding>)> = Vec::new();
        seen += pager.read(&body, &mut |pod| {
            if !audited(pod) {
                return;
            }
            let mut found = detector.pod(pod, &mut warnings);
            say(&mut warnings, events);
            let controller = controller_of(pod);
            if let Some(cronjob) = controller
                .as_ref()
                .filter(|c| c.group == "batch" && c.kind == "Job")
                .and_then(|c| runs.get(&c.uid))
            {
                found.extend(detector.cronjob_run(POD, pod, cronjob));
            }
            if found.iter().any(|f| f.finding.needs_owner()) {
                walks.push((PodRef::of(pod), found));
            } else {
                findings.extend(found);
            }
        })?;
        drop(body);
        for (pod, mut found) in walks {
            let (owner, fix) =
                resolver
                    .fix_for(cluster, &pod)
                    .await
                    .map_err(|source| Error::Api {
                        action: "read the owners of",
                        what: format!("pod {}/{}", pod.namespace, pod.name),
                        source,
                    })?;
            for f in found.iter_mut().filter(|f| f.finding.needs_owner()) {
                f.owner.clone_from(&owner);
                f.fix = fix.clone();
            }
            findings.extend(found);
        }
        events(Event::Scanned {
            what: "pods",
            seen,
            findings: findings.len(),
        });
    }
    Ok(findings)
}

/// Says the warnings collected so far.
fn say(warnings: &mut Vec<String>, events: &mut dyn FnMut(Event<'_>)) {
    for w in warnings.drain(..) {
        events(Event::Warning(&w));
    }
}

/// Applies the in-place fixes; returns what remains: the pods' findings, the fixes that
/// failed (with the error), everything with `dry_run`. A run of a CronJob that got its
/// label is no longer a finding: it follows from the CronJob's.
async fn fix_all<C: Cluster>(
    cluster: &C,
    detector: &Detector,
    findings: Vec<Finding>,
    dry_run: bool,
    events: &mut dyn FnMut(Event<'_>),
) -> Vec<Finding> {
    let mut remaining = Vec::with_capacity(findings.len());
    let mut runs = Vec::new();
    let mut labelled: HashSet<(String, String)> = HashSet::new();
    for mut f in findings {
        if f.finding == FindingType::CronjobRunUnlabelled {
            runs.push(f);
            continue;
        }
        if !fix::fixable(&f) {
            remaining.push(f);
            continue;
        }
        let what = format!(
            "{}: {}/{}",
            f.namespace,
            f.kind.to_ascii_lowercase(),
            f.name
        );
        let key = (f.namespace.clone(), f.name.clone());
        let cronjob = f.finding == FindingType::CronjobAppMissing;
        let done = match fix::apply(cluster, detector, &f, dry_run).await {
            Applied::Patched(_) => {
                events(Event::Note(&format!("{what} patched ({})", f.rule)));
                true
            }
            Applied::NoLongerNeeded => {
                events(Event::Note(&format!(
                    "{what} unchanged: changed meanwhile, no longer needs {}",
                    f.rule
                )));
                true
            }
            Applied::WouldPatch(patch) => {
                let json = serde_json::to_string(&patch).unwrap_or_default();
                events(Event::Note(&format!("{what} would be patched: {json}")));
                remaining.push(f);
                false
            }
            Applied::Failed(error) => {
                events(Event::Note(&format!("{what} not patched: {error}")));
                f.fix.error = Some(error);
                remaining.push(f);
                false
            }
        };
        if done && cronjob {
            labelled.insert(key);
        }
    }
    remaining.extend(runs.into_iter().filter(|r| {
        let cronjob = r.owner.as_ref().map(|o| o.name.clone()).unwrap_or_default();
        !labelled.contains(&(r.namespace.clone(), cronjob))
    }));
    remaining
}

#[cfg(test)]
mod tests {
    use super::testing::FakeCluster;
    use super::*;
    use serde_json::json;

    const RUN: &str = "audit-run";

    fn labels(extra: Value) -> Value {
        let mut l = json!({RUN: "1"});
        if let Some(m) = extra.as_object() {
            for (k, v) in m {
                l[k] = v.clone();
            }
        }
        l
    }

    fn ns(name: &str, l: Value) -> Value {
        json!({"metadata": {"name": name, "labels": l}})
    }

    fn svc(ns: &str, name: &str, extra_labels: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": format!("svc-{name}"),
                            "resourceVersion": "1", "labels": labels(extra_labels)},
               "spec": {"ports": [{"name": "traceport", "port": 8126}]}})
    }

    fn seeded() -> FakeCluster {
        let c = FakeCluster::default();
        for n in ["a", "b", "kube-system"] {
            c.put(Res::Namespace, ns(n, json!({})));
        }
        c.put(
            Res::Namespace,
            ns("out", json!({"tracepatch.io/enabled": "false"})),
        );
        c.put(Res::Service, svc("a", "agent", json!({})));
        c.put(Res::Service, svc("b", "agent", json!({})));
        c.put(Res::Service, svc("out", "agent", json!({})));
        c.put(Res::Service, svc("kube-system", "agent", json!({})));
        c.put(
            Res::Service,
            svc("a", "opted", json!({"tracepatch.io/enabled": "false"})),
        );
        c.put(Res::Service, {
            let mut s = svc("a", "other-run", json!({}));
            s["metadata"]["labels"][RUN] = json!("2");
            s
        });
        c.put(Res::Service, {
            let mut s = svc("a", "clean", json!({}));
            s["spec"]["ports"][0]["appProtocol"] = json!("tcp");
            s
        });
        // A CronJob without the label, one Job of it and its pod; another CronJob's Job.
        c.put(
            Res::CronJob,
            json!({"metadata": {"namespace": "a", "name": "report", "uid": "cj1", "resourceVersion": "4",
                                "labels": labels(json!({}))},
                   "spec": {"jobTemplate": {"spec": {"template": {"metadata": {"labels": labels(json!({}))}}}}}}),
        );
        let job = |name: &str, cj: &str| {
            json!({"metadata": {"namespace": "a", "name": name, "uid": format!("job-{name}"),
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "x", "uid": cj, "controller": true}]},
                   "spec": {"template": {"metadata": {"labels": {"job-name": name}}}}})
        };
        c.put(Res::Job, job("report-1", "cj1"));
        c.put(Res::Job, job("other-1", "cj-other"));
        c.put(
            Res::Pod,
            json!({"metadata": {"namespace": "a", "name": "report-1-abc", "labels": labels(json!({})),
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "report-1", "uid": "job-report-1", "controller": true}]},
                   "spec": {"containers": [{"name": "job", "image": "busybox"}]},
                   "status": {"phase": "Succeeded"}}),
        );
        // An agent pod with a sidecar, owned through a ReplicaSet by a Deployment.
        c.put(
            Res::Deployment,
            json!({"metadata": {"namespace": "a", "name": "agent", "uid": "d1"}}),
        );
        c.put(
            Res::ReplicaSet,
            json!({"metadata": {"namespace": "a", "name": "agent-5d", "uid": "r1",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "agent", "uid": "d1", "controller": true}]}}),
        );
        c.put(
            Res::Pod,
            json!({"metadata": {"namespace": "a", "name": "agent-5d-x", "labels": labels(json!({"app": "datadog-agent"})),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "agent-5d", "uid": "r1", "controller": true}]},
                   "spec": {"containers": [{"name": "agent", "image": "gcr.io/datadoghq/agent:7"},
                                           {"name": "istio-proxy", "image": "istio/proxyv2"}]}}),
        );
        c
    }

    fn options(namespace: Option<&str>, chunk: u32) -> ScanOptions {
        ScanOptions {
            namespace: namespace.map(str::to_owned),
            selector: Some(format!("{RUN}=1")),
            exclude: vec!["kube-system".into(), "tracepatch".into()],
            chunk_size: chunk,
        }
    }

    async fn scan_ids(c: &FakeCluster, o: &ScanOptions) -> (Vec<String>, Vec<Finding>) {
        let d = Detector::new(Engine::default());
        let mut notes = Vec::new();
        let mut found = scan(c, &d, o, &mut |e| {
            if let Event::Note(n) = e {
                notes.push(n.to_owned());
            }
        })
        .await
        .unwrap();
        report::sort(&mut found);
        let ids = found
            .iter()
            .map(|f| format!("{}/{}/{}/{}", f.namespace, f.kind, f.name, f.rule))
            .collect();
        (ids, found)
    }

    #[tokio::test]
    async fn all_namespaces_page_by_page() {
        let c = seeded();
        let (ids, found) = scan_ids(&c, &options(None, 1)).await;
        assert_eq!(
            ids,
            [
                "a/CronJob/report/cronjob-app",
                "a/Job/report-1/cronjob-app",
                "a/Pod/agent-5d-x/agent-sidecar",
                "a/Pod/report-1-abc/cronjob-app",
                "a/Service/agent/trace-port",
                "b/Service/agent/trace-port",
            ]
        );
        let agent = &found[2];
        assert_eq!(agent.finding, FindingType::AgentSidecarInjected);
        assert_eq!(
            agent.fix.command.as_deref(),
            Some("kubectl -n a rollout restart deployment/agent")
        );
        // One object per page: every page was asked for.
        let pod_lists = c.lists().iter().filter(|l| l.0 == Res::Pod).count();
        assert_eq!(pod_lists, 2);
        assert!(c.lists().iter().all(|l| l.2 == 1));
    }

    #[tokio::test]
    async fn one_namespace() {
        let c = seeded();
        let (ids, _) = scan_ids(&c, &options(Some("b"), 500)).await;
        assert_eq!(ids, ["b/Service/agent/trace-port"]);
        assert!(c.lists().iter().all(|l| l.1.as_deref() == Some("b")));
        // Jobs are read only when a CronJob lacks the label.
        assert!(!c.lists().iter().any(|l| l.0 == Res::Job));
    }

    #[tokio::test]
    async fn excluded_and_opted_out_namespaces_are_not_read() {
        let c = seeded();
        for n in ["out", "kube-system"] {
            let (ids, _) = scan_ids(&c, &options(Some(n), 500)).await;
            assert!(ids.is_empty(), "{n}: {ids:?}");
        }
        assert!(c.lists().is_empty());
        let mut o = options(None, 500);
        o.exclude = vec!["a".into()];
        let (ids, _) = scan_ids(&c, &o).await;
        assert_eq!(
            ids,
            [
                "b/Service/agent/trace-port",
                "kube-system/Service/agent/trace-port"
            ]
        );
    }

    #[tokio::test]
    async fn fix_leaves_the_pods() {
        let c = seeded();
        let d = Detector::new(Engine::default());
        let o = options(None, 500);
        let found = scan(&c, &d, &o, &mut |_| {}).await.unwrap();
        let mut notes = Vec::new();
        let mut left = fix_all(&c, &d, found, false, &mut |e| {
            if let Event::Note(n) = e {
                notes.push(n.to_owned());
            }
        })
        .await;
        report::sort(&mut left);
        let ids: Vec<_> = left
            .iter()
            .map(|f| format!("{}/{}", f.kind, f.name))
            .collect();
        assert_eq!(ids, ["Pod/agent-5d-x"]);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes.contains(&"a: cronjob/report patched (cronjob-app)".to_owned()));
        // A second audit agrees.
        let again = scan(&c, &d, &o, &mut |_| {}).await.unwrap();
        assert_eq!(again, left);
    }

    #[tokio::test]
    async fn dry_run_changes_nothing() {
        let c = seeded();
        let d = Detector::new(Engine::default());
        let o = options(None, 500);
        let found = scan(&c, &d, &o, &mut |_| {}).await.unwrap();
        let n = found.len();
        let left = fix_all(&c, &d, found, true, &mut |_| {}).await;
        assert_eq!(left.len(), n);
        assert!(c.patches().is_empty());
    }

    #[tokio::test]
    async fn a_failed_fix_remains_with_its_error() {
        let c = seeded();
        let d = Detector::new(Engine::default());
        let mut o = options(Some("b"), 500);
        o.selector = None;
        let found = scan(&c, &d, &o, &mut |_| {}).await.unwrap();
        c.fail_patches(vec![ApiError {
            code: Some(403),
            message: "403 Forbidden: no".into(),
        }]);
        let left = fix_all(&c, &d, found, false, &mut |_| {}).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].fix.error.as_deref(), Some("403 Forbidden: no"));
    }
}
