//! The resource types the fake API server serves: Roster's CRDs plus the core kinds Roster
//! touches, with what discovery, OpenAPI and Table printing need to know about each.

use serde_json::{Value, json};

use super::table::{Column, columns_from_crd_version};

/// One served resource type.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// The openAPIV3Schema (CRDs); `None` for built-ins, which are stored as given.
    pub schema: Option<Value>,
    pub status_subresource: bool,
    pub columns: Vec<Column>,
    /// Whether `metadata.generation` is maintained (custom resources).
    pub generation: bool,
}

impl ResourceType {
    /// `group/version`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `accounts.roster.io` style name used in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn builtin(group: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceType {
        ResourceType {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            short_names: vec![],
            categories: vec![],
            schema: None,
            status_subresource: kind == "Namespace",
            columns: columns_from_crd_version(&json!({})),
            generation: false,
        }
    }

    /// The types of every CRD given (as JSON CustomResourceDefinition objects).
    pub fn from_crd(crd: &Value) -> Vec<ResourceType> {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        spec["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["served"].as_bool().unwrap_or(true))
            .map(|v| ResourceType {
                group: spec["group"].as_str().unwrap_or_default().into(),
                version: v["name"].as_str().unwrap_or_default().into(),
                kind: names["kind"].as_str().unwrap_or_default().into(),
                plural: names["plural"].as_str().unwrap_or_default().into(),
                singular: names["singular"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        names["kind"]
                            .as_str()
                            .unwrap_or_default()
                            .to_ascii_lowercase()
                    }),
                namespaced: spec["scope"].as_str() != Some("Cluster"),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                status_subresource: v.pointer("/subresources/status").is_some(),
                columns: columns_from_crd_version(v),
                generation: true,
            })
            .collect()
    }
}

/// The built-in kinds Roster uses, plus Roster's CRDs.
pub fn default_types() -> Vec<ResourceType> {
    let mut types = vec![
        ResourceType::builtin("", "Namespace", "namespaces", false),
        ResourceType::builtin("", "ConfigMap", "configmaps", true),
        ResourceType::builtin("", "Secret", "secrets", true),
        ResourceType::builtin("", "Event", "events", true),
        ResourceType::builtin("events.k8s.io", "Event", "events", true),
        ResourceType::builtin("coordination.k8s.io", "Lease", "leases", true),
    ];
    types[0].short_names = vec!["ns".into()];
    types[1].short_names = vec!["cm".into()];
    types[3].short_names = vec!["ev".into()];
    for crd in crate::api::crds() {
        let crd = serde_json::to_value(crd).expect("CRD serializes");
        types.extend(ResourceType::from_crd(&crd));
    }
    types
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

/// `GET /apis`: every non-core group.
pub fn api_group_list(types: &[ResourceType]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = vec![];
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| g == &t.group) {
            Some((_, versions)) if !versions.contains(&t.version) => {
                versions.push(t.version.clone())
            }
            Some(_) => {}
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}` (one group).
pub fn api_group(types: &[ResourceType], group: &str) -> Option<Value> {
    api_group_list(types)["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)
        .map(|g| {
            let mut g = g.clone();
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            g
        })
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`.
pub fn api_resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let mine: Vec<&ResourceType> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut resources = vec![];
    for t in &mine {
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced,
            "kind": t.kind, "verbs": VERBS,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": mine[0].api_version(), "resources": resources,
    }))
}

/// `GET /openapi/v3`: the index of group-version documents.
pub fn openapi_index(types: &[ResourceType]) -> Value {
    let mut paths = serde_json::Map::new();
    for t in types {
        let path = openapi_path(t);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash=roster")}),
        );
    }
    json!({ "paths": paths })
}

fn openapi_path(t: &ResourceType) -> String {
    if t.group.is_empty() {
        format!("api/{}", t.version)
    } else {
        format!("apis/{}/{}", t.group, t.version)
    }
}

/// `GET /openapi/v3/{path}`: a minimal OpenAPI document naming each kind of the group-version,
/// with its schema (CRDs) and `x-kubernetes-group-version-kind`, which is what kubectl reads.
pub fn openapi_document(types: &[ResourceType], path: &str) -> Option<Value> {
    let mine: Vec<&ResourceType> = types.iter().filter(|t| openapi_path(t) == path).collect();
    if mine.is_empty() {
        return None;
    }
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for t in &mine {
        // kubectl checks that the PATCH operation of the kind accepts `fieldValidation` before it
        // relies on server-side field validation.
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let params = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                            {"name": "dryRun", "in": "query", "schema": {"type": "string"}}]);
        let op = |action: &str| {
            json!({"operationId": format!("{action}{}", t.kind), "parameters": params,
            "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}}})
        };
        let base = if t.group.is_empty() {
            format!("/api/{}", t.version)
        } else {
            format!("/apis/{}/{}", t.group, t.version)
        };
        let collection = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{base}/{}", t.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"post": op("post"), "get": op("list")}),
        );
        paths.insert(format!("{collection}/{{name}}"), json!({"patch": op("patch"), "put": op("put"), "get": op("get"), "delete": op("delete")}));
    }
    for t in mine {
        let mut schema = t.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": t.group, "version": t.version, "kind": t.kind}]);
        let reversed: Vec<&str> = t.group.split('.').rev().collect();
        let prefix = if t.group.is_empty() {
            "io.k8s.api.core".to_string()
        } else {
            reversed.join(".")
        };
        schemas.insert(format!("{prefix}.{}.{}", t.version, t.kind), schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Roster fake API server", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "37", "gitVersion": "v1.37.0-roster-fake",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc",
        "platform": "linux/amd64",
    })
}
