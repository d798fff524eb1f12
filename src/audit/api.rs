//! The Kubernetes API, as the audit uses it: paginated lists, gets and JSON Patches of
//! raw JSON objects (never typed structs: the rules read raw JSON, and a typed round
//! trip would drop fields from a newer Kubernetes).
//!
//! [`Cluster`] is the seam: the scan, the owner walk and the fixes are written against
//! it, [`KubeCluster`] implements it with a kube client, and the unit tests with an
//! in-memory cluster.

use kube::api::{GetParams, ListParams, Patch, PatchParams};
use kube::core::Request;
use serde_json::Value;

/// The field manager named in the managed fields of what `--fix` patches.
const FIELD_MANAGER: &str = "tracepatch-audit";

/// The resources the audit reads or patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Namespace,
    Pod,
    Service,
    CronJob,
    Job,
    ReplicaSet,
    Deployment,
    DaemonSet,
    StatefulSet,
}

/// One list request.
#[derive(Clone, Copy, Debug)]
pub struct ListQuery<'a> {
    pub selector: Option<&'a str>,
    pub limit: u32,
    pub continue_token: Option<&'a str>,
}

/// The API's answer to a failed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status, when the apiserver answered.
    pub code: Option<u16>,
    /// `409 Conflict: <message>`, or what went wrong on the way.
    pub message: String,
}

/// What the audit needs from a cluster.
pub trait Cluster {
    /// One page of `res` in `namespace` (all namespaces when `None`): the list's JSON as
    /// the apiserver sent it, for the caller to read in place (as a simd-json tape).
    async fn list(
        &self,
        res: Res,
        namespace: Option<&str>,
        query: ListQuery<'_>,
    ) -> Result<Vec<u8>, ApiError>;

    /// The object, or `None` if it does not exist.
    async fn get(
        &self,
        res: Res,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError>;

    /// Applies an RFC 6902 patch; with `dry_run`, only as a server-side dry run.
    async fn patch(
        &self,
        res: Res,
        namespace: &str,
        name: &str,
        patch: &json_patch::Patch,
        dry_run: bool,
    ) -> Result<(), ApiError>;
}

/// [`Cluster`] through a kube client.
pub struct KubeCluster {
    client: kube::Client,
}

// === impl Res ===

impl Res {
    /// API group and version prefix of the URL path.
    fn prefix(self) -> &'static str {
        match self {
            Res::Namespace | Res::Pod | Res::Service => "/api/v1",
            Res::CronJob | Res::Job => "/apis/batch/v1",
            Res::ReplicaSet | Res::Deployment | Res::DaemonSet | Res::StatefulSet => {
                "/apis/apps/v1"
            }
        }
    }

    /// The resource name in URLs and in `kubectl` commands.
    pub fn plural(self) -> &'static str {
        match self {
            Res::Namespace => "namespaces",
            Res::Pod => "pods",
            Res::Service => "services",
            Res::CronJob => "cronjobs",
            Res::Job => "jobs",
            Res::ReplicaSet => "replicasets",
            Res::Deployment => "deployments",
            Res::DaemonSet => "daemonsets",
            Res::StatefulSet => "statefulsets",
        }
    }

    /// The collection's URL path.
    pub fn path(self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self != Res::Namespace => {
                format!("{}/namespaces/{ns}/{}", self.prefix(), self.plural())
            }
            _ => format!("{}/{}", self.prefix(), self.plural()),
        }
    }
}

// === impl ApiError ===

impl ApiError {
    /// An error that did not come from the apiserver's answer.
    pub fn other(message: impl Into<String>) -> Self {
        ApiError {
            code: None,
            message: message.into(),
        }
    }

    /// 409 Conflict, or 422 (a failed `test` operation is refused as invalid).
    pub fn is_conflict_or_invalid(&self) -> bool {
        matches!(self.code, Some(409 | 422))
    }
}

impl From<kube::Error> for ApiError {
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => {
                let reason = if status.reason.is_empty() {
                    http::StatusCode::from_u16(status.code)
                        .ok()
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("")
                } else {
                    status.reason.as_str()
                };
                let mut message = format!("{} {reason}", status.code).trim_end().to_owned();
                if !status.message.is_empty() {
                    message.push_str(": ");
                    message.push_str(&status.message);
                }
                ApiError {
                    code: Some(status.code),
                    message,
                }
            }
            other => ApiError::other(chain(&other)),
        }
    }
}

/// An error and its sources, `a: b: c`, each said once (kube's errors repeat their
/// source in their own message).
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

// === impl KubeCluster ===

impl KubeCluster {
    /// A client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or, inside a pod,
    /// the service account.
    pub async fn connect() -> Result<Self, kube::Error> {
        Ok(KubeCluster {
            client: kube::Client::try_default().await?,
        })
    }

    /// The namespace of the kubeconfig context (or of the pod), `default` otherwise.
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Sends a request and parses the answer (from its bytes: kube's `request` copies
    /// the body into a `String` first).
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let body = self.send_bytes(request).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::other(format!("cannot read the answer: {e}")))
    }

    /// Sends a request; the answer's body, or the API's error.
    async fn send_bytes(&self, request: http::Request<Vec<u8>>) -> Result<Vec<u8>, ApiError> {
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await?;
        let status = response.status();
        let body = response.into_body().collect_bytes().await?;
        if status.is_client_error() || status.is_server_error() {
            let mut answer =
                serde_json::from_slice::<kube::core::Status>(&body).unwrap_or_else(|_| {
                    let text = String::from_utf8_lossy(&body);
                    kube::core::Status::failure(text.trim(), "").with_code(status.as_u16())
                });
            if answer.code == 0 {
                answer.code = status.as_u16();
            }
            return Err(kube::Error::Api(answer.boxed()).into());
        }
        Ok(Vec::from(body))
    }
}

/// Reads a list's JSON one item at a time: `each` gets every item (as a
/// `serde_json::Value` without `metadata.managedFields`, which no rule reads and which
/// take as much memory again as the rest of a pod) and drops it before the next is read,
/// so that a page costs its text and one object. Returns the continue token.
pub fn read_list(body: &[u8], each: &mut dyn FnMut(Value)) -> Result<Option<String>, ApiError> {
    use serde::de::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(body);
    let token = de
        .deserialize_map(ListVisitor { each })
        .and_then(|token| de.end().map(|()| token))
        .map_err(|e| ApiError::other(format!("cannot read the list: {e}")))?;
    Ok(token.filter(|t| !t.is_empty()))
}

/// The members of a list: `metadata.continue`, and `items` one by one.
struct ListVisitor<'f> {
    each: &'f mut dyn FnMut(Value),
}

impl<'de> serde::de::Visitor<'de> for ListVisitor<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes list")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        #[derive(serde::Deserialize)]
        struct ListMeta {
            #[serde(default, rename = "continue")]
            continue_token: Option<String>,
        }
        let mut token = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "metadata" => token = map.next_value::<ListMeta>()?.continue_token,
                "items" => map.next_value_seed(Items {
                    each: &mut *self.each,
                })?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(token)
    }
}

/// The `items` array, handed over one element at a time.
struct Items<'f> {
    each: &'f mut dyn FnMut(Value),
}

impl<'de> serde::de::DeserializeSeed<'de> for Items<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // `any`: an empty list may come as `null`.
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Items<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element_seed(Object { metadata: false })? {
            (self.each)(item);
        }
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// An object as a `Value`, without `metadata.managedFields` (`metadata: true` while
/// reading the metadata itself).
#[derive(Clone, Copy)]
struct Object {
    metadata: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Object {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Object {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if !self.metadata && key == "metadata" {
                let meta = map.next_value_seed(Object { metadata: true })?;
                out.insert(key, meta);
            } else if self.metadata && key == "managedFields" {
                map.next_value::<serde::de::IgnoredAny>()?;
            } else {
                out.insert(key, map.next_value()?);
            }
        }
        Ok(Value::Object(out))
    }
}

fn request_error(e: kube::core::request::Error) -> ApiError {
    ApiError::other(format!("cannot build the request: {e}"))
}

impl Cluster for KubeCluster {
    async fn list(
        &self,
        res: Res,
        namespace: Option<&str>,
        query: ListQuery<'_>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut lp = ListParams::default().limit(query.limit);
        if let Some(selector) = query.selector {
            lp = lp.labels(selector);
        }
        if let Some(token) = query.continue_token {
            lp = lp.continue_token(token);
        }
        let request = Request::new(res.path(namespace))
            .list(&lp)
            .map_err(request_error)?;
        self.send_bytes(request).await
    }

    async fn get(
        &self,
        res: Res,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let request = Request::new(res.path(namespace))
            .get(name, &GetParams::default())
            .map_err(request_error)?;
        match self.send::<Value>(request).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn patch(
        &self,
        res: Res,
        namespace: &str,
        name: &str,
        patch: &json_patch::Patch,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let mut pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        if dry_run {
            pp = pp.dry_run();
        }
        let request = Request::new(res.path(Some(namespace)))
            .patch(name, &pp, &Patch::<()>::Json(patch.clone()))
            .map_err(request_error)?;
        self.send::<serde::de::IgnoredAny>(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(Res::Pod.path(None), "/api/v1/pods");
        assert_eq!(Res::Pod.path(Some("a")), "/api/v1/namespaces/a/pods");
        assert_eq!(
            Res::CronJob.path(Some("a")),
            "/apis/batch/v1/namespaces/a/cronjobs"
        );
        assert_eq!(Res::ReplicaSet.path(None), "/apis/apps/v1/replicasets");
        assert_eq!(Res::Namespace.path(Some("x")), "/api/v1/namespaces");
    }

    #[test]
    fn lists_are_read_one_item_at_a_time_without_managed_fields() {
        let text = br#"{"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "9", "continue": "abc", "remainingItemCount": 1},
            "items": [{"metadata": {"name": "a", "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                                    "labels": {"managedFields": "kept"}},
                       "spec": {"managedFields": 1}},
                      {"metadata": {"name": "b"}}]}"#;
        let mut seen = Vec::new();
        let token = read_list(text, &mut |v| seen.push(v)).unwrap();
        assert_eq!(token.as_deref(), Some("abc"));
        assert_eq!(
            seen,
            [
                serde_json::json!({"metadata": {"name": "a", "labels": {"managedFields": "kept"}},
                                   "spec": {"managedFields": 1}}),
                serde_json::json!({"metadata": {"name": "b"}}),
            ]
        );
        let mut n = 0;
        let last = read_list(
            br#"{"metadata": {"continue": ""}, "items": null}"#,
            &mut |_| n += 1,
        );
        assert_eq!((last, n), (Ok(None), 0));
        assert!(read_list(br#"{"items": [1]}"#, &mut |_| {}).is_err());
        assert!(read_list(br#"{"items": []} x"#, &mut |_| {}).is_err());
        assert!(read_list(b"[", &mut |_| {}).is_err());
    }

    #[test]
    fn api_errors_keep_the_status_code() {
        let status =
            kube::core::Status::failure("the object has been modified", "Conflict").with_code(409);
        let e = ApiError::from(kube::Error::Api(status.boxed()));
        assert_eq!(e.code, Some(409));
        assert_eq!(e.message, "409 Conflict: the object has been modified");
        assert!(e.is_conflict_or_invalid());
        assert!(!ApiError::other("x").is_conflict_or_invalid());
    }
}
