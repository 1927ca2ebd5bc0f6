//! The fake API server's storage: objects by type, namespace and name, one resourceVersion
//! counter, the event history watches replay from, and the write semantics of a real server
//! (optimistic concurrency, generation, status subresource, finalizers, garbage collection).

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use super::types::ResourceType;
use crate::api::validate::{FieldError, FieldErrorKind, apply_defaults, validate_against};

/// How many events watches can replay; older resourceVersions get 410 Gone.
pub const HISTORY: usize = 20_000;

/// An API error, rendered as a `Status` object.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn not_found(t: &ResourceType, name: &str) -> ApiError {
        let mut e = ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", t.qualified()),
        );
        e.details = json!({"name": name, "group": t.group, "kind": t.plural});
        e
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

/// Key of a stored object: type index, namespace ("" when cluster-scoped), name.
pub type ObjKey = (usize, String, String);

/// One change, as watches report it.
#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub type_: &'static str,
    pub key: ObjKey,
    pub object: Value,
}

/// Everything the server holds.
pub struct Store {
    pub types: Vec<ResourceType>,
    pub objects: BTreeMap<ObjKey, Value>,
    pub rv: u64,
    pub events: VecDeque<Event>,
    /// Every event with `rv <= compacted` is gone from the history.
    pub compacted: u64,
    uid_seq: u64,
    /// Writes by verb, for tests that count them ("zero status writes").
    pub writes: BTreeMap<String, u64>,
}

/// How a write treats the fields a request sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: status is kept from the stored object (when a subresource exists).
    Main,
    /// The status subresource: only status is taken from the request.
    Status,
}

impl Store {
    pub fn new(types: Vec<ResourceType>) -> Store {
        Store {
            types,
            objects: BTreeMap::new(),
            rv: 1,
            events: VecDeque::new(),
            compacted: 0,
            uid_seq: 0,
            writes: BTreeMap::new(),
        }
    }

    fn now() -> String {
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now())
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn new_uid(&mut self) -> String {
        // splitmix64 over a time-seeded counter: unique per server, random-looking like a UUID.
        fn mix(mut z: u64) -> u64 {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        self.uid_seq += 1;
        let seed = jiff::Timestamp::now().as_nanosecond() as u64;
        let (a, b) = (
            mix(seed ^ self.uid_seq),
            mix(self.uid_seq.wrapping_mul(0x2545_f491_4f6c_dd1d)),
        );
        let h = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }

    fn record(&mut self, type_: &'static str, key: ObjKey, object: Value) {
        self.events.push_back(Event {
            rv: self.rv,
            type_,
            key,
            object,
        });
        while self.events.len() > HISTORY {
            if let Some(e) = self.events.pop_front() {
                self.compacted = e.rv;
            }
        }
    }

    /// Forgets the whole event history: watches from any older resourceVersion get 410.
    pub fn compact(&mut self) {
        self.events.clear();
        self.compacted = self.rv;
    }

    fn count(&mut self, verb: &str, t: usize) {
        let name = format!("{verb} {}", self.types[t].qualified());
        *self.writes.entry(name).or_default() += 1;
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        let t = self
            .types
            .iter()
            .position(|t| t.kind == "Namespace" && t.group.is_empty());
        t.is_some_and(|t| {
            self.objects
                .contains_key(&(t, String::new(), ns.to_string()))
        })
    }

    /// Validates (schema + CEL) and prunes or refuses unknown fields, as a CRD's server does.
    fn admit(
        &self,
        t: usize,
        obj: Value,
        old: Option<&Value>,
        strict: bool,
    ) -> Result<Value, ApiError> {
        let ty = &self.types[t];
        let Some(schema) = &ty.schema else {
            return Ok(obj);
        };
        let mut obj = apply_defaults(schema, &obj);
        let mut unknown = vec![];
        prune(schema, &mut obj, "", true, &mut unknown);
        if strict && !unknown.is_empty() {
            let list = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("strict decoding error: {list}"),
            ));
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let errors: Vec<FieldError> = validate_against(schema, &obj, old)
            .into_iter()
            .filter(|e| e.kind != FieldErrorKind::Unknown)
            .collect();
        if errors.is_empty() {
            return Ok(obj);
        }
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                json!({
                    "reason": e.kind.cause_type().unwrap_or("FieldValueInvalid"),
                    "message": e.to_string().split_once(": ").map(|(_, m)| m.to_string()).unwrap_or_else(|| e.to_string()),
                    "field": e.field,
                })
            })
            .collect();
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let message = if list.len() == 1 {
            format!(
                "{}.{} \"{name}\" is invalid: {}",
                ty.kind, ty.group, list[0]
            )
        } else {
            format!(
                "{}.{} \"{name}\" is invalid: [{}]",
                ty.kind,
                ty.group,
                list.join(", ")
            )
        };
        let mut e = ApiError::new(422, "Invalid", message);
        e.details = json!({"name": name, "group": ty.group, "kind": ty.kind, "causes": causes});
        Err(e)
    }

    /// Creates an object (POST, or an apply to a missing object).
    pub fn create(
        &mut self,
        t: usize,
        ns: &str,
        mut obj: Value,
        strict: bool,
    ) -> Result<Value, ApiError> {
        let ty = self.types[t].clone();
        if !obj.is_object() {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the body must be a JSON object",
            ));
        }
        if obj.get("metadata").is_none_or(|m| !m.is_object()) {
            obj["metadata"] = json!({});
        }
        let mut name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let Some(prefix) = obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
            else {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        ty.kind
                    ),
                ));
            };
            name = format!("{prefix}{:05x}", self.uid_seq + self.rv);
            obj["metadata"]["name"] = json!(name);
        }
        if ty.namespaced {
            if !self.namespace_exists(ns) {
                let mut e =
                    ApiError::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
                e.details = json!({"name": ns, "kind": "namespaces"});
                return Err(e);
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let key = (
            t,
            if ty.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.clone(),
        );
        if self.objects.contains_key(&key) {
            let mut e = ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", ty.qualified()),
            );
            e.details = json!({"name": name, "group": ty.group, "kind": ty.plural});
            return Err(e);
        }
        obj["apiVersion"] = json!(ty.api_version());
        obj["kind"] = json!(ty.kind);
        if ty.status_subresource
            && ty.schema.is_some()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        let mut obj = self.admit(t, obj, None, strict)?;
        let uid = self.new_uid();
        let m = obj["metadata"].as_object_mut().expect("metadata object");
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(Store::now()));
        m.remove("deletionTimestamp");
        m.remove("resourceVersion");
        if ty.generation {
            m.insert("generation".into(), json!(1));
        }
        if ty.kind == "Namespace" && ty.group.is_empty() {
            obj["status"] = json!({"phase": "Active"});
        }
        normalize_metadata(&mut obj);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        self.record("ADDED", key, obj.clone());
        self.count("create", t);
        Ok(obj)
    }

    pub fn get(&self, t: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = self.key(t, ns, name);
        self.objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.types[t], name))
    }

    pub fn key(&self, t: usize, ns: &str, name: &str) -> ObjKey {
        let ns = if self.types[t].namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        (t, ns, name.to_string())
    }

    /// Replaces an object (PUT, or the result of a patch). `expect_rv`: the resourceVersion the
    /// writer based its change on (409 when stale).
    pub fn update(
        &mut self,
        t: usize,
        ns: &str,
        name: &str,
        incoming: Value,
        part: Part,
        strict: bool,
    ) -> Result<Value, ApiError> {
        let ty = self.types[t].clone();
        let key = self.key(t, ns, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&ty, name))?;
        if let Some(rv) = incoming
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv)
                != old
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
        {
            let mut e = ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    ty.qualified()
                ),
            );
            e.details = json!({"name": name, "group": ty.group, "kind": ty.plural});
            return Err(e);
        }
        if let Some(n) = incoming.pointer("/metadata/name").and_then(Value::as_str)
            && n != name
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the name of the object ({n}) does not match the name on the URL ({name})"),
            ));
        }
        let mut new = match part {
            Part::Main => {
                let mut new = incoming.clone();
                if ty.status_subresource && ty.schema.is_some() {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(o) = new.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                new
            }
            Part::Status => {
                let mut new = old.clone();
                match incoming.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
                new
            }
        };
        // Server-owned metadata cannot be changed by writers.
        new["apiVersion"] = json!(ty.api_version());
        new["kind"] = json!(ty.kind);
        if new.get("metadata").is_none_or(|m| !m.is_object()) {
            new["metadata"] = json!({});
        }
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    new["metadata"].as_object_mut().map(|m| m.remove(f));
                }
            }
        }
        // A deleting object may lose finalizers but gain none.
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let before: Vec<Value> = old
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let after: Vec<Value> = new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if after.iter().any(|f| !before.contains(f)) {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                        ty.qualified()
                    ),
                ));
            }
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        normalize_metadata(&mut new);
        let mut new = if part == Part::Main || ty.schema.is_some() {
            self.admit(t, new, Some(&old), strict)?
        } else {
            new
        };
        if new == old {
            // A no-op write changes nothing and emits no event.
            return Ok(old);
        }
        if ty.generation && spec_changed(&old, &new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.count(
            if part == Part::Status {
                "update-status"
            } else {
                "update"
            },
            t,
        );
        let finished = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty());
        if finished {
            self.remove(key, new.clone());
            return Ok(new);
        }
        self.objects.insert(key.clone(), new.clone());
        self.record("MODIFIED", key, new.clone());
        Ok(new)
    }

    /// Deletes an object: with finalizers it only gets a deletionTimestamp.
    pub fn delete(&mut self, t: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        let ty = self.types[t].clone();
        let key = self.key(t, ns, name);
        let mut obj = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&ty, name))?;
        self.count("delete", t);
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                obj["metadata"]["deletionTimestamp"] = json!(Store::now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                self.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.objects.insert(key.clone(), obj.clone());
                self.record("MODIFIED", key, obj.clone());
            }
            return Ok(obj);
        }
        if ty.kind == "Namespace" && ty.group.is_empty() {
            return Ok(self.delete_namespace(key, obj));
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.remove(key, obj.clone());
        Ok(obj)
    }

    /// Removes an object for good, then garbage-collects its dependants (ownerReferences).
    fn remove(&mut self, key: ObjKey, obj: Value) {
        self.objects.remove(&key);
        self.record("DELETED", key.clone(), obj.clone());
        let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) else {
            return;
        };
        let dependants: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(k, o)| {
                // Namespaced dependants live with their owner, or belong to a cluster-scoped one.
                let reachable = k.1 == key.1 || key.1.is_empty();
                let owned = o
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid));
                reachable && owned
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (t, ns, name) in dependants {
            let _ = self.delete(t, &ns, &name);
        }
        self.finish_namespaces();
    }

    /// Deleting a namespace deletes everything in it; it goes once they are gone.
    fn delete_namespace(&mut self, key: ObjKey, mut obj: Value) -> Value {
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = json!(Store::now());
            obj["status"] = json!({"phase": "Terminating"});
            self.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(key.clone(), obj.clone());
            self.record("MODIFIED", key.clone(), obj.clone());
        }
        let inside: Vec<ObjKey> = self
            .objects
            .keys()
            .filter(|k| k.1 == key.2)
            .cloned()
            .collect();
        for (t, ns, name) in inside {
            let _ = self.delete(t, &ns, &name);
        }
        self.finish_namespaces();
        obj
    }

    fn finish_namespaces(&mut self) {
        let terminating: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(k, o)| {
                self.types[k.0].kind == "Namespace"
                    && o.pointer("/metadata/deletionTimestamp").is_some()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in terminating {
            if !self.objects.keys().any(|k| k.1 == key.2) {
                let mut obj = self.objects[&key].clone();
                self.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.objects.remove(&key);
                self.record("DELETED", key, obj);
            }
        }
    }
}

/// Empty lists and maps in metadata are not stored (Go's `omitempty`): a real server never
/// returns `finalizers: []`, and kube-rs's finalizer patch relies on that.
fn normalize_metadata(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|_, v| match v {
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Null => false,
            _ => true,
        });
    }
}

/// Did anything but metadata and status change?
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// Removes fields the schema does not declare (unless it preserves unknown fields), recording
/// their paths in `unknown`.
pub fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let keys: Vec<String> = fields.keys().cloned().collect();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(&k)).or(additional) {
                    if let Some(v) = fields.get_mut(&k) {
                        prune(sub, v, &child, false, unknown);
                    }
                } else if props.is_some() && !preserve {
                    fields.remove(&k);
                    unknown.push(child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(sub, item, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}
