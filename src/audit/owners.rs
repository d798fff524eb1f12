//! Who replaces a pod: the walk up its ownerReferences (Pod → ReplicaSet → Deployment;
//! DaemonSet; StatefulSet; Job → CronJob) and the fix that follows from it: a
//! `kubectl rollout restart` of a Deployment, DaemonSet or StatefulSet, else deleting
//! the pod (its ReplicaSet or Job replaces it; without an owner it must be created again
//! from its manifest).
//!
//! Only controller references count (`controller: true`), as for Kubernetes' own
//! controllers. Each owner is read once per run (cached) and must still exist with the
//! uid the reference names; a reference to an owner that is gone is treated as none.

use std::collections::HashMap;

use serde_json::Value;

use super::api::{ApiError, Cluster, Res};
use super::detect::{CRONJOB, Fix, Owner, View, meta};

/// A controller reference from `metadata.ownerReferences`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerRef {
    /// The API group (`apps`, `batch`, `""` for the core group).
    pub group: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What the walk needs of a pod (the pod itself is not kept: pages are read one object
/// at a time).
#[derive(Clone, Debug)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub controller: Option<ControllerRef>,
}

impl PodRef {
    pub fn of<'a, J: View<'a>>(pod: J) -> Self {
        PodRef {
            namespace: meta(pod, "namespace").to_owned(),
            name: meta(pod, "name").to_owned(),
            controller: controller_of(pod),
        }
    }
}

/// What the walk keeps of an owner it read.
#[derive(Clone, Debug)]
struct Node {
    uid: String,
    controller: Option<ControllerRef>,
}

/// The owner walk, with what it has read so far.
#[derive(Default)]
pub struct Resolver {
    cache: HashMap<(Res, String, String), Option<Node>>,
}

/// The controller reference of an object, if any.
pub fn controller_of<'a, J: View<'a>>(obj: J) -> Option<ControllerRef> {
    obj.at(&["metadata", "ownerReferences"])?
        .items()
        .find(|r| r.get("controller").and_then(J::as_bool) == Some(true))
        .map(|r| {
            let s = |k: &str| r.str_at(&[k]).unwrap_or("").to_owned();
            let api_version = s("apiVersion");
            let group = api_version
                .rsplit_once('/')
                .map_or("", |(g, _)| g)
                .to_owned();
            ControllerRef {
                group,
                kind: s("kind"),
                name: s("name"),
                uid: s("uid"),
            }
        })
}

impl ControllerRef {
    /// The resource the audit may read for this kind, if it is one it walks through.
    fn res(&self) -> Option<Res> {
        match (self.group.as_str(), self.kind.as_str()) {
            ("apps", "ReplicaSet") => Some(Res::ReplicaSet),
            ("apps", "Deployment") => Some(Res::Deployment),
            ("apps", "DaemonSet") => Some(Res::DaemonSet),
            ("apps", "StatefulSet") => Some(Res::StatefulSet),
            ("batch", "Job") => Some(Res::Job),
            ("batch", "CronJob") => Some(Res::CronJob),
            _ => None,
        }
    }

    fn owner(&self) -> Owner {
        Owner {
            kind: self.kind.clone(),
            name: self.name.clone(),
        }
    }

    /// `kind/name` as kubectl writes it.
    fn slash(&self) -> String {
        format!("{}/{}", self.kind.to_ascii_lowercase(), self.name)
    }
}

impl Resolver {
    /// The owner a pod's fix acts on, and the fix.
    pub async fn fix_for<C: Cluster>(
        &mut self,
        cluster: &C,
        pod: &PodRef,
    ) -> Result<(Option<Owner>, Fix), ApiError> {
        let (ns, name) = (pod.namespace.as_str(), pod.name.as_str());
        let gone = |c: &ControllerRef| {
            Fix::delete_pod(
                ns,
                name,
                format!(
                    "its owner {} is gone: create the pod again from its manifest",
                    c.slash()
                ),
            )
        };
        let Some(c) = pod.controller.clone() else {
            let note = "no owner: create the pod again from its manifest".to_owned();
            return Ok((None, Fix::delete_pod(ns, name, note)));
        };
        let Some(res) = c.res() else {
            // An owner the audit does not read (a ReplicationController, a custom
            // controller): it replaces the pod.
            let note = format!("{} replaces it", c.slash());
            return Ok((Some(c.owner()), Fix::delete_pod(ns, name, note)));
        };
        let Some(node) = self.node(cluster, res, ns, &c).await? else {
            return Ok((Some(c.owner()), gone(&c)));
        };
        match res {
            Res::DaemonSet | Res::StatefulSet => {
                let kind = c.kind.to_ascii_lowercase();
                Ok((Some(c.owner()), Fix::restart(ns, &kind, &c.name)))
            }
            Res::ReplicaSet => {
                let replaces = format!("{} replaces it", c.slash());
                let Some(top) = node.controller else {
                    return Ok((Some(c.owner()), Fix::delete_pod(ns, name, replaces)));
                };
                if top.res() != Some(Res::Deployment) {
                    // A ReplicaSet of another controller (an Argo Rollout, ...): that
                    // controller's own restart is not kubectl's; the ReplicaSet replaces
                    // a deleted pod.
                    let note = format!("{replaces} (owned by {})", top.slash());
                    return Ok((Some(top.owner()), Fix::delete_pod(ns, name, note)));
                }
                if self
                    .node(cluster, Res::Deployment, ns, &top)
                    .await?
                    .is_some()
                {
                    Ok((Some(top.owner()), Fix::restart(ns, "deployment", &top.name)))
                } else {
                    Ok((Some(c.owner()), Fix::delete_pod(ns, name, replaces)))
                }
            }
            Res::Job => match node.controller {
                Some(cj) if cj.res() == Some(Res::CronJob) => {
                    let note = format!(
                        "{} replaces it; later runs of cronjob/{} are admitted anew",
                        c.slash(),
                        cj.name
                    );
                    let owner = Owner {
                        kind: CRONJOB.into(),
                        name: cj.name,
                    };
                    Ok((Some(owner), Fix::delete_pod(ns, name, note)))
                }
                _ => {
                    let note = format!("{} replaces it", c.slash());
                    Ok((Some(c.owner()), Fix::delete_pod(ns, name, note)))
                }
            },
            // A pod owned directly by a Deployment or CronJob does not happen; say so
            // plainly rather than guess.
            _ => {
                let note = format!("{} owns it", c.slash());
                Ok((Some(c.owner()), Fix::delete_pod(ns, name, note)))
            }
        }
    }

    /// The owner named by `c`, read once; `None` if it is gone (or replaced by another
    /// object of the same name).
    async fn node<C: Cluster>(
        &mut self,
        cluster: &C,
        res: Res,
        ns: &str,
        c: &ControllerRef,
    ) -> Result<Option<Node>, ApiError> {
        let key = (res, ns.to_owned(), c.name.clone());
        let node = match self.cache.get(&key) {
            Some(node) => node.clone(),
            None => {
                let obj = cluster.get(res, Some(ns), &c.name).await?;
                let node = obj.as_ref().map(|o: &Value| Node {
                    uid: meta(o, "uid").to_owned(),
                    controller: controller_of(o),
                });
                self.cache.insert(key, node.clone());
                node
            }
        };
        Ok(node.filter(|n| c.uid.is_empty() || n.uid == c.uid))
    }
}

#[cfg(test)]
mod tests {
    use super::super::detect::FixAction;
    use super::super::testing::FakeCluster;
    use super::*;
    use serde_json::json;

    fn owned(kind: &str, api: &str, name: &str, uid: &str) -> Value {
        json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true}])
    }

    fn obj(ns: &str, name: &str, uid: &str, owners: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": uid, "ownerReferences": owners}})
    }

    fn cluster() -> FakeCluster {
        let c = FakeCluster::default();
        c.put(Res::Deployment, obj("a", "web", "d1", json!([])));
        c.put(
            Res::ReplicaSet,
            obj(
                "a",
                "web-5d9f",
                "r1",
                owned("Deployment", "apps/v1", "web", "d1"),
            ),
        );
        c.put(Res::ReplicaSet, obj("a", "bare-rs", "r2", json!([])));
        c.put(Res::DaemonSet, obj("a", "node", "ds1", json!([])));
        c.put(Res::StatefulSet, obj("a", "db", "ss1", json!([])));
        c.put(
            Res::Job,
            obj(
                "a",
                "report-1",
                "j1",
                owned("CronJob", "batch/v1", "report", "cj1"),
            ),
        );
        c.put(Res::Job, obj("a", "once", "j2", json!([])));
        c
    }

    async fn fix(c: &FakeCluster, r: &mut Resolver, owners: Value) -> (Option<Owner>, Fix) {
        r.fix_for(c, &PodRef::of(&obj("a", "p", "p1", owners)))
            .await
            .unwrap()
    }

    fn owner(kind: &str, name: &str) -> Option<Owner> {
        Some(Owner {
            kind: kind.into(),
            name: name.into(),
        })
    }

    #[tokio::test]
    async fn walks_to_the_restartable_owner() {
        let c = cluster();
        let mut r = Resolver::default();
        let (o, f) = fix(&c, &mut r, owned("ReplicaSet", "apps/v1", "web-5d9f", "r1")).await;
        assert_eq!(o, owner("Deployment", "web"));
        assert_eq!(f.action, FixAction::Restart);
        assert_eq!(
            f.command.as_deref(),
            Some("kubectl -n a rollout restart deployment/web")
        );
        let (o, f) = fix(&c, &mut r, owned("DaemonSet", "apps/v1", "node", "ds1")).await;
        assert_eq!(o, owner("DaemonSet", "node"));
        assert_eq!(
            f.command.as_deref(),
            Some("kubectl -n a rollout restart daemonset/node")
        );
        let (o, f) = fix(&c, &mut r, owned("StatefulSet", "apps/v1", "db", "ss1")).await;
        assert_eq!(o, owner("StatefulSet", "db"));
        assert_eq!(
            f.command.as_deref(),
            Some("kubectl -n a rollout restart statefulset/db")
        );
        // Read once each.
        let (o, _) = fix(&c, &mut r, owned("ReplicaSet", "apps/v1", "web-5d9f", "r1")).await;
        assert_eq!(o, owner("Deployment", "web"));
        assert_eq!(c.gets(), 4);
    }

    #[tokio::test]
    async fn otherwise_the_pod_is_deleted() {
        let c = cluster();
        let mut r = Resolver::default();
        let (o, f) = fix(&c, &mut r, json!([])).await;
        assert_eq!(o, None);
        assert_eq!(f.action, FixAction::DeletePod);
        assert_eq!(f.command.as_deref(), Some("kubectl -n a delete pod p"));
        assert!(f.note.unwrap().starts_with("no owner"));

        let (o, f) = fix(&c, &mut r, owned("Job", "batch/v1", "report-1", "j1")).await;
        assert_eq!(o, owner("CronJob", "report"));
        assert_eq!(f.action, FixAction::DeletePod);
        assert_eq!(
            f.note.as_deref(),
            Some("job/report-1 replaces it; later runs of cronjob/report are admitted anew")
        );
        let (o, _) = fix(&c, &mut r, owned("Job", "batch/v1", "once", "j2")).await;
        assert_eq!(o, owner("Job", "once"));
        let (o, f) = fix(&c, &mut r, owned("ReplicaSet", "apps/v1", "bare-rs", "r2")).await;
        assert_eq!(o, owner("ReplicaSet", "bare-rs"));
        assert_eq!(f.note.as_deref(), Some("replicaset/bare-rs replaces it"));
        let (o, f) = fix(&c, &mut r, owned("ReplicationController", "v1", "rc", "x")).await;
        assert_eq!(o, owner("ReplicationController", "rc"));
        assert_eq!(f.action, FixAction::DeletePod);
    }

    #[tokio::test]
    async fn a_missing_or_replaced_owner_is_gone() {
        let c = cluster();
        let mut r = Resolver::default();
        let (_, f) = fix(&c, &mut r, owned("DaemonSet", "apps/v1", "nope", "x")).await;
        assert!(f.note.unwrap().contains("is gone"));
        // Same name, another uid: a different object.
        let (_, f) = fix(&c, &mut r, owned("DaemonSet", "apps/v1", "node", "old-uid")).await;
        assert_eq!(f.action, FixAction::DeletePod);
    }

    #[test]
    fn only_controller_references_count() {
        let o = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "2", "controller": true}
        ]}});
        let c = controller_of(&o).unwrap();
        assert_eq!(
            (c.group.as_str(), c.kind.as_str(), c.name.as_str()),
            ("apps", "ReplicaSet", "r")
        );
        assert!(controller_of(&json!({"metadata": {}})).is_none());
    }
}
