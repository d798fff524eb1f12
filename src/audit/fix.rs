//! `tracepatch audit --fix`: the rules applied in place to what can change in place
//! (Services and CronJobs; never pods).
//!
//! Each fix is the rule's JSON Patch behind a `test` of `/metadata/resourceVersion`: it
//! applies only to the version the finding was made on. It is sent first as a
//! server-side dry run (admission, validation, the test), then for real. A conflict (409,
//! or 422 when the `test` failed) is retried once on the object read again and judged
//! again by the rules, which may find nothing left to do; then it is reported.

use json_patch::{PatchOperation, TestOperation};
use jsonptr::PointerBuf;
use serde_json::Value;

use super::api::{ApiError, Cluster, Res};
use super::detect::{CRONJOB, Detector, Finding, SERVICE, meta};

/// What became of one fix.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// Patched (this patch, with its `test` operation).
    Patched(json_patch::Patch),
    /// `--dry-run`: this patch would be sent.
    WouldPatch(json_patch::Patch),
    /// Read again after a conflict, the object needs nothing any more.
    NoLongerNeeded,
    /// Not patched, and why.
    Failed(String),
}

/// The patch sent for a finding made on `resource_version`: the `test` first.
pub fn guarded(resource_version: Option<&str>, ops: &[PatchOperation]) -> json_patch::Patch {
    let mut patch = Vec::with_capacity(ops.len() + 1);
    if let Some(rv) = resource_version {
        patch.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["metadata", "resourceVersion"]),
            value: Value::String(rv.to_owned()),
        }));
    }
    patch.extend_from_slice(ops);
    json_patch::Patch(patch)
}

fn res_of(kind: &str) -> Option<Res> {
    match kind {
        SERVICE => Some(Res::Service),
        CRONJOB => Some(Res::CronJob),
        _ => None,
    }
}

/// Whether `--fix` changes this finding's object in place.
pub fn fixable(f: &Finding) -> bool {
    res_of(f.kind).is_some() && !f.patch.is_empty()
}

/// Applies one finding's fix (a Service or CronJob finding).
pub async fn apply<C: Cluster>(
    cluster: &C,
    detector: &Detector,
    finding: &Finding,
    dry_run: bool,
) -> Applied {
    let Some(res) = res_of(finding.kind) else {
        return Applied::Failed(format!("a {} is not changed in place", finding.kind));
    };
    let (ns, name) = (finding.namespace.as_str(), finding.name.as_str());
    let mut patch = guarded(finding.resource_version.as_deref(), &finding.patch);
    if dry_run {
        return Applied::WouldPatch(patch);
    }
    let mut retried = false;
    loop {
        let err = match send(cluster, res, ns, name, &patch).await {
            Ok(()) => return Applied::Patched(patch),
            Err(e) => e,
        };
        if retried || !err.is_conflict_or_invalid() {
            let what = if retried { "after a retry: " } else { "" };
            return Applied::Failed(format!("{what}{}", err.message));
        }
        retried = true;
        // Read it again and ask the rules again.
        let obj = match cluster.get(res, Some(ns), name).await {
            Ok(Some(obj)) => obj,
            Ok(None) => return Applied::Failed("deleted meanwhile".into()),
            Err(e) => return Applied::Failed(format!("cannot read it again: {}", e.message)),
        };
        let rv = meta(&obj, "resourceVersion");
        if err.code == Some(422) && Some(rv) == patch_rv(&patch) {
            // The version is the one tested: the patch itself is refused.
            return Applied::Failed(err.message);
        }
        let mut ignored = Vec::new();
        let again = match res {
            Res::Service => detector.service(&obj, &mut ignored),
            _ => detector.cronjob(&obj, &mut ignored),
        };
        let Some(again) = again else {
            return Applied::NoLongerNeeded;
        };
        patch = guarded(again.resource_version.as_deref(), &again.patch);
    }
}

/// A server-side dry run, then the real patch.
async fn send<C: Cluster>(
    cluster: &C,
    res: Res,
    ns: &str,
    name: &str,
    patch: &json_patch::Patch,
) -> Result<(), ApiError> {
    cluster.patch(res, ns, name, patch, true).await?;
    cluster.patch(res, ns, name, patch, false).await
}

/// The resourceVersion a guarded patch tests.
fn patch_rv(patch: &json_patch::Patch) -> Option<&str> {
    match patch.0.first() {
        Some(PatchOperation::Test(t)) if t.path.as_str() == "/metadata/resourceVersion" => {
            t.value.as_str()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::FakeCluster;
    use super::*;
    use crate::engine::Engine;
    use serde_json::json;

    fn svc(rv: &str) -> Value {
        json!({"metadata": {"namespace": "a", "name": "agent", "resourceVersion": rv},
               "spec": {"ports": [{"name": "traceport", "port": 8126}]}})
    }

    fn setup() -> (FakeCluster, Detector, Finding) {
        let c = FakeCluster::default();
        c.put(Res::Service, svc("5"));
        let d = Detector::new(Engine::default());
        let f = d.service(&svc("5"), &mut Vec::new()).unwrap();
        (c, d, f)
    }

    #[test]
    fn the_patch_starts_with_the_test() {
        let p = guarded(Some("5"), &[]);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "5"}])
        );
        assert_eq!(patch_rv(&p), Some("5"));
    }

    #[tokio::test]
    async fn dry_run_then_patch() {
        let (c, d, f) = setup();
        let got = apply(&c, &d, &f, false).await;
        assert!(matches!(got, Applied::Patched(_)), "{got:?}");
        assert_eq!(c.patches(), vec![true, false], "dry run first");
        let now = c.object(Res::Service, "a", "agent").unwrap();
        assert_eq!(now["spec"]["ports"][0]["appProtocol"], "tcp");
        assert!(d.service(&now, &mut Vec::new()).is_none());
    }

    #[tokio::test]
    async fn dry_run_flag_sends_nothing() {
        let (c, d, f) = setup();
        let got = apply(&c, &d, &f, true).await;
        assert!(
            matches!(got, Applied::WouldPatch(ref p) if p.0.len() == 2),
            "{got:?}"
        );
        assert!(c.patches().is_empty());
    }

    #[tokio::test]
    async fn a_conflict_is_retried_once_on_the_new_version() {
        let (c, d, f) = setup();
        // Changed by someone else after the scan: the test fails (422), as the apiserver
        // answers.
        c.touch(Res::Service, "a", "agent");
        let got = apply(&c, &d, &f, false).await;
        assert!(
            matches!(got, Applied::Patched(ref p) if patch_rv(p) == Some("6")),
            "{got:?}"
        );
        assert_eq!(c.patches(), vec![true, true, false]);
    }

    #[tokio::test]
    async fn fixed_meanwhile_needs_nothing() {
        let (c, d, f) = setup();
        c.replace(Res::Service, {
            let mut s = svc("9");
            s["spec"]["ports"][0]["appProtocol"] = json!("tcp");
            s
        });
        assert_eq!(apply(&c, &d, &f, false).await, Applied::NoLongerNeeded);
    }

    #[tokio::test]
    async fn a_second_conflict_is_reported() {
        let (c, d, f) = setup();
        c.fail_patches(vec![
            ApiError {
                code: Some(409),
                message: "409 Conflict: x".into(),
            },
            ApiError {
                code: Some(409),
                message: "409 Conflict: y".into(),
            },
        ]);
        assert_eq!(
            apply(&c, &d, &f, false).await,
            Applied::Failed("after a retry: 409 Conflict: y".into())
        );
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let (c, d, f) = setup();
        c.fail_patches(vec![ApiError {
            code: Some(403),
            message: "403 Forbidden: no".into(),
        }]);
        assert_eq!(
            apply(&c, &d, &f, false).await,
            Applied::Failed("403 Forbidden: no".into())
        );
        assert_eq!(c.patches(), vec![true]);
    }

    #[tokio::test]
    async fn invalid_on_the_same_version_is_not_a_conflict() {
        let (c, d, f) = setup();
        c.fail_patches(vec![ApiError {
            code: Some(422),
            message: "422 Invalid: bad".into(),
        }]);
        assert_eq!(
            apply(&c, &d, &f, false).await,
            Applied::Failed("422 Invalid: bad".into())
        );
    }

    #[tokio::test]
    async fn deleted_meanwhile() {
        let (c, d, f) = setup();
        c.remove(Res::Service, "a", "agent");
        c.fail_patches(vec![ApiError {
            code: Some(409),
            message: "409".into(),
        }]);
        assert_eq!(
            apply(&c, &d, &f, false).await,
            Applied::Failed("deleted meanwhile".into())
        );
    }
}
