//! An in-memory [`Cluster`] for the unit tests: paginated lists with continue tokens,
//! equality label selectors, gets, JSON Patches that honour `test` operations and bump
//! the resourceVersion, server-side dry runs, and scripted failures.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use super::api::{ApiError, Cluster, ListQuery, Res};
use super::detect::meta;

type Key = (Res, String, String);

#[derive(Default)]
pub struct FakeCluster {
    objects: RefCell<BTreeMap<Key, Value>>,
    gets: RefCell<usize>,
    lists: RefCell<Vec<(Res, Option<String>, u32)>>,
    patches: RefCell<Vec<bool>>,
    failures: RefCell<VecDeque<ApiError>>,
}

impl FakeCluster {
    fn key(res: Res, obj: &Value) -> Key {
        (
            res,
            meta(obj, "namespace").to_owned(),
            meta(obj, "name").to_owned(),
        )
    }

    /// Stores an object as it is.
    pub fn put(&self, res: Res, obj: Value) {
        self.objects.borrow_mut().insert(Self::key(res, &obj), obj);
    }

    /// Stores an object in place of the one of the same name.
    pub fn replace(&self, res: Res, obj: Value) {
        self.put(res, obj);
    }

    pub fn remove(&self, res: Res, ns: &str, name: &str) {
        self.objects
            .borrow_mut()
            .remove(&(res, ns.to_owned(), name.to_owned()));
    }

    pub fn object(&self, res: Res, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .borrow()
            .get(&(res, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Someone else changed the object: a new resourceVersion.
    pub fn touch(&self, res: Res, ns: &str, name: &str) {
        let mut objects = self.objects.borrow_mut();
        if let Some(obj) = objects.get_mut(&(res, ns.to_owned(), name.to_owned())) {
            bump(obj);
        }
    }

    /// The next patch calls fail with these errors, in order.
    pub fn fail_patches(&self, errors: Vec<ApiError>) {
        self.failures.borrow_mut().extend(errors);
    }

    pub fn gets(&self) -> usize {
        *self.gets.borrow()
    }

    /// Each patch call: `true` for a dry run.
    pub fn patches(&self) -> Vec<bool> {
        self.patches.borrow().clone()
    }

    /// Each list call: resource, namespace, limit.
    pub fn lists(&self) -> Vec<(Res, Option<String>, u32)> {
        self.lists.borrow().clone()
    }
}

/// resourceVersion + 1.
fn bump(obj: &mut Value) {
    let rv: u64 = meta(&*obj, "resourceVersion").parse().unwrap_or(0);
    obj["metadata"]["resourceVersion"] = Value::String((rv + 1).to_string());
}

fn selected(obj: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').all(|req| {
        let (k, v) = req.split_once('=').unwrap_or((req, ""));
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v)
    })
}

impl Cluster for FakeCluster {
    async fn list(
        &self,
        res: Res,
        namespace: Option<&str>,
        query: ListQuery<'_>,
    ) -> Result<Vec<u8>, ApiError> {
        self.lists
            .borrow_mut()
            .push((res, namespace.map(str::to_owned), query.limit));
        let start: usize = query.continue_token.map_or(0, |t| t.parse().unwrap_or(0));
        let all: Vec<Value> = self
            .objects
            .borrow()
            .iter()
            .filter(|((r, ns, _), obj)| {
                *r == res && namespace.is_none_or(|n| n == ns) && selected(obj, query.selector)
            })
            .map(|(_, o)| o.clone())
            .collect();
        let end = (start + query.limit as usize).min(all.len());
        let token = (end < all.len()).then(|| end.to_string());
        let page = serde_json::json!({
            "kind": "List",
            "metadata": {"continue": token.unwrap_or_default(), "resourceVersion": "1"},
            "items": &all[start.min(end)..end],
        });
        Ok(serde_json::to_vec(&page).unwrap_or_default())
    }

    async fn get(
        &self,
        res: Res,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        *self.gets.borrow_mut() += 1;
        Ok(self.object(res, namespace.unwrap_or(""), name))
    }

    async fn patch(
        &self,
        res: Res,
        namespace: &str,
        name: &str,
        patch: &json_patch::Patch,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        self.patches.borrow_mut().push(dry_run);
        if let Some(e) = self.failures.borrow_mut().pop_front() {
            return Err(e);
        }
        let key = (res, namespace.to_owned(), name.to_owned());
        let mut objects = self.objects.borrow_mut();
        let Some(obj) = objects.get_mut(&key) else {
            return Err(ApiError {
                code: Some(404),
                message: "404 Not Found".into(),
            });
        };
        let mut copy = obj.clone();
        if let Err(e) = json_patch::patch(&mut copy, patch) {
            return Err(ApiError {
                code: Some(422),
                message: format!("422 Unprocessable Entity: {e}"),
            });
        }
        if !dry_run {
            bump(&mut copy);
            *obj = copy;
        }
        Ok(())
    }
}
