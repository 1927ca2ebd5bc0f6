//! The CRDs: generated from the Rust types, checked in, documented on every field, bounded for
//! the API server's CEL cost estimate, and their CEL rules behave as intended.

use std::path::Path;

use kube::core::cel::{Validator, compile_schema};
use roster::api;
use serde_json::{Value, json};

fn schema_of(plural: &str) -> Value {
    let crd = api::crds()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no CRD {plural}"));
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.clone())
        .expect("schema");
    serde_json::to_value(schema).unwrap()
}

/// The messages of every CEL rule that fails for `object` (and `old`, for updates).
fn cel_failures(plural: &str, object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of(plural), object, old) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn obj(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "roster.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "physics"},
        "spec": spec,
    })
}

fn account(spec: Value) -> Value {
    obj("Account", "ada", spec)
}

#[test]
fn crds_directory_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut stale = vec![];
    for (file, yaml) in api::crd_files() {
        let on_disk = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        if on_disk != yaml {
            stale.push(file);
        }
    }
    let extra: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| !api::crd_files().iter().any(|(n, _)| n == f))
        .collect();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "crds/ is stale (changed: {stale:?}, unexpected: {extra:?}); regenerate with `make crds`"
    );
}

/// Walks a schema and reports every property without a description, every string without
/// maxLength (enums and formats with a bound excepted), every list without maxItems and every
/// map without maxProperties.
fn walk(path: &str, s: &Value, problems: &mut Vec<String>) {
    if !path.is_empty()
        && s.get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .is_empty()
    {
        problems.push(format!("{path}: no description"));
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") if s.get("enum").is_none() && s.get("maxLength").is_none() => {
            problems.push(format!("{path}: string without maxLength"))
        }
        Some("array") => {
            if s.get("maxItems").is_none() {
                problems.push(format!("{path}: list without maxItems"));
            }
            if let Some(items) = s.get("items") {
                walk_items(&format!("{path}[]"), items, problems);
            }
        }
        Some("object") => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    walk(&p, v, problems);
                }
            }
            if let Some(ap) = s.get("additionalProperties").filter(|v| v.is_object()) {
                if s.get("maxProperties").is_none() {
                    problems.push(format!("{path}: map without maxProperties"));
                }
                walk_items(&format!("{path}{{}}"), ap, problems);
            }
        }
        _ => {}
    }
}

/// List items and map values need bounds but not a description of their own.
fn walk_items(path: &str, s: &Value, problems: &mut Vec<String>) {
    let mut with_doc = s.clone();
    if with_doc.get("description").is_none() {
        with_doc["description"] = json!("(item)");
    }
    walk(path, &with_doc, problems);
}

#[test]
fn every_field_is_documented_and_bounded() {
    let mut problems = vec![];
    for crd in api::crds() {
        let plural = crd.spec.names.plural.clone();
        walk(&plural, &schema_of(&plural), &mut problems);
        // The root description is what `kubectl explain <kind>` shows first.
        let root = schema_of(&plural);
        assert!(
            root["description"]
                .as_str()
                .is_some_and(|d| !d.contains("Auto-generated"))
        );
    }
    assert!(
        problems.is_empty(),
        "schema problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_walker_catches_an_undocumented_or_unbounded_field() {
    let schema = json!({"type": "object", "description": "root", "properties": {
        "a": {"type": "string", "maxLength": 3},
        "b": {"type": "string", "description": "x"},
        "c": {"type": "array", "description": "x", "items": {"type": "integer"}},
    }});
    let mut problems = vec![];
    walk("root", &schema, &mut problems);
    assert_eq!(
        problems,
        [
            "root.a: no description",
            "root.b: string without maxLength",
            "root.c: list without maxItems"
        ]
    );
}

#[test]
fn every_cel_rule_compiles() {
    for crd in api::crds() {
        let compiled = compile_schema(&schema_of(&crd.spec.names.plural));
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", crd.spec.names.plural);
    }
}

#[test]
fn shapes_names_and_columns() {
    let names: Vec<(String, String, Option<Vec<String>>)> = api::crds()
        .into_iter()
        .map(|c| {
            (
                c.spec.names.kind,
                c.spec.names.plural,
                c.spec.names.categories,
            )
        })
        .collect();
    let kinds: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
    assert_eq!(
        kinds,
        ["Person", "Account", "Project", "Guest", "ImportSource"]
    );
    let plurals: Vec<&str> = names.iter().map(|n| n.1.as_str()).collect();
    assert_eq!(
        plurals,
        ["people", "accounts", "projects", "guests", "importsources"]
    );
    assert!(
        names
            .iter()
            .all(|n| n.2.as_deref() == Some(&["roster".to_string()][..]))
    );
    for crd in api::crds() {
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert!(cols.contains(&"Ready") && cols.contains(&"Age"), "{cols:?}");
    }
}

#[test]
fn a_valid_account_passes() {
    let a = account(json!({"person": "ada", "username": "ada.l", "projects": ["optics"]}));
    assert_eq!(cel_failures("accounts", &a, None), Vec::<String>::new());
}

#[test]
fn username_format_and_reserved_names_are_refused() {
    for bad in [
        "Ada",
        "1ada",
        "ada lovelace",
        "ad@",
        "a,b",
        "x".repeat(33).as_str(),
    ] {
        let a = account(json!({"person": "ada", "username": bad}));
        let f = cel_failures("accounts", &a, None);
        assert!(
            f.iter().any(|m| m.starts_with("username must be")),
            "{bad:?} accepted: {f:?}"
        );
    }
    let root = account(json!({"person": "ada", "username": "root"}));
    assert_eq!(
        cel_failures("accounts", &root, None),
        ["username is reserved for a system account"]
    );
}

#[test]
fn username_person_and_uid_are_immutable() {
    let old = account(json!({"person": "ada", "username": "ada", "uidNumber": 20001}));
    let renamed = account(json!({"person": "ada", "username": "lovelace", "uidNumber": 20001}));
    assert_eq!(
        cel_failures("accounts", &renamed, Some(&old)),
        ["username is immutable"]
    );
    let moved = account(json!({"person": "bob", "username": "ada", "uidNumber": 20001}));
    assert_eq!(
        cel_failures("accounts", &moved, Some(&old)),
        ["person is immutable"]
    );
    let renumbered = account(json!({"person": "ada", "username": "ada", "uidNumber": 20002}));
    assert_eq!(
        cel_failures("accounts", &renumbered, Some(&old)),
        ["uidNumber cannot be changed or removed once set"]
    );
    let dropped = account(json!({"person": "ada", "username": "ada"}));
    assert_eq!(
        cel_failures("accounts", &dropped, Some(&old)),
        ["uidNumber cannot be changed or removed once set"]
    );
    // Setting a uid where there was none, and unrelated edits, are fine.
    let before = account(json!({"person": "ada", "username": "ada"}));
    assert!(cel_failures("accounts", &old, Some(&before)).is_empty());
    let locked =
        account(json!({"person": "ada", "username": "ada", "uidNumber": 20001, "locked": true}));
    assert!(cel_failures("accounts", &locked, Some(&old)).is_empty());
}

#[test]
fn home_directory_may_not_climb() {
    for (home, ok) in [
        ("/home/ada", true),
        ("/home/../etc", false),
        ("/home/./ada", false),
        ("/home/ada..x", true),
    ] {
        let a = account(json!({"person": "ada", "username": "ada", "homeDirectory": home}));
        assert_eq!(cel_failures("accounts", &a, None).is_empty(), ok, "{home}");
    }
}

#[test]
fn project_group_names() {
    let ok = obj("Project", "optics", json!({"members": ["ada"]}));
    assert!(cel_failures("projects", &ok, None).is_empty());
    // A Kubernetes name that is not a group name needs spec.groupName.
    let long = obj("Project", &"p".repeat(40), json!({}));
    assert_eq!(cel_failures("projects", &long, None).len(), 1);
    let named = obj("Project", &"p".repeat(40), json!({"groupName": "p_short"}));
    assert!(cel_failures("projects", &named, None).is_empty());
    let bad = obj("Project", "optics", json!({"groupName": "Optics Lab"}));
    assert!(cel_failures("projects", &bad, None)[0].starts_with("groupName must be"));
    let old = obj(
        "Project",
        "optics",
        json!({"groupName": "optics", "gidNumber": 30000}),
    );
    let renamed = obj(
        "Project",
        "optics",
        json!({"groupName": "optix", "gidNumber": 30000}),
    );
    assert_eq!(
        cel_failures("projects", &renamed, Some(&old)),
        ["groupName is immutable"]
    );
    let unnamed = obj("Project", "optics", json!({"gidNumber": 30000}));
    assert_eq!(
        cel_failures("projects", &unnamed, Some(&old)),
        ["groupName is immutable"]
    );
    let regid = obj(
        "Project",
        "optics",
        json!({"groupName": "optics", "gidNumber": 30001}),
    );
    assert_eq!(
        cel_failures("projects", &regid, Some(&old)),
        ["gidNumber cannot be changed or removed once set"]
    );
}

#[test]
fn gold_allocation_windows_must_be_ordered() {
    let alloc = |start: &str, end: &str| {
        obj(
            "Project",
            "optics",
            json!({"gold": {"allocations": [{"amount": 100, "start": start, "end": end}]}}),
        )
    };
    assert!(cel_failures("projects", &alloc("2027-01-01", "2027-12-31"), None).is_empty());
    assert_eq!(
        cel_failures("projects", &alloc("2027-12-31", "2027-01-01"), None),
        ["an allocation must end after it starts"]
    );
}

fn guest(spec: Value) -> Value {
    let mut base = json!({
        "host": "ada",
        "person": {"givenName": "Grace", "familyName": "Hopper"},
        "account": {"username": "ghopper"},
    });
    base.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    obj("Guest", "grace", base)
}

#[test]
fn guest_types_need_their_fields() {
    let personal = guest(json!({"type": "Personal", "validUntil": "2027-03-31"}));
    assert!(cel_failures("guests", &personal, None).is_empty());
    let open_ended = guest(json!({"type": "Personal"}));
    assert_eq!(
        cel_failures("guests", &open_ended, None),
        ["a Personal guest needs validUntil"]
    );
    let technical = guest(json!({"type": "Technical", "adminGroup": "hpc-admins"}));
    assert!(cel_failures("guests", &technical, None).is_empty());
    let orphan = guest(json!({"type": "Technical"}));
    assert_eq!(
        cel_failures("guests", &orphan, None),
        ["a Technical guest needs an adminGroup"]
    );
    let bad_name =
        guest(json!({"type": "Technical", "adminGroup": "x", "account": {"username": "Grace!"}}));
    assert!(cel_failures("guests", &bad_name, None)[0].starts_with("username must be"));
}

fn import(reader: Value) -> Value {
    obj(
        "ImportSource",
        "hr",
        json!({
            "sourceUID": "hr-db",
            "reader": reader,
            "mapping": {"first": "givenName"},
            "recordUID": "<id>",
        }),
    )
}

#[test]
fn import_readers_are_a_union() {
    let csv = import(
        json!({"type": "Csv", "csv": {"configMapRef": {"name": "staff", "key": "staff.csv"}}}),
    );
    assert!(cel_failures("importsources", &csv, None).is_empty());
    let missing = import(json!({"type": "Csv"}));
    assert_eq!(
        cel_failures("importsources", &missing, None),
        ["reader.csv is required exactly when reader.type is Csv"]
    );
    let mixed = import(
        json!({"type": "Sql", "sql": {"dsnRef": {"name": "hr", "key": "dsn"}, "query": "select 1"},
                              "csv": {"path": "x.csv"}}),
    );
    assert_eq!(
        cel_failures("importsources", &mixed, None),
        ["reader.csv is required exactly when reader.type is Csv"]
    );
    let two_sources = import(
        json!({"type": "Csv", "csv": {"path": "x.csv", "secretRef": {"name": "s", "key": "k"}}}),
    );
    assert_eq!(
        cel_failures("importsources", &two_sources, None),
        ["a CSV reader needs exactly one of configMapRef, secretRef or path"]
    );
    let old = csv.clone();
    let mut changed = csv.clone();
    changed["spec"]["sourceUID"] = json!("other");
    assert_eq!(
        cel_failures("importsources", &changed, Some(&old)),
        ["sourceUID is immutable"]
    );
}

/// `kubernetes-validate` (PyPI) accepts every CRD for Kubernetes 1.33 and 1.37. `make test`
/// installs it into `.dev/venv`.
#[test]
fn crds_pass_kubernetes_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tool = root.join(".dev/venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run `make test` (or `make tools`) to install it",
        tool.display()
    );
    let files: Vec<_> = api::crd_files()
        .into_iter()
        .map(|(f, _)| root.join("crds").join(f))
        .collect();
    for version in ["1.33.0", "1.37.0"] {
        let out = std::process::Command::new(&tool)
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate {version} failed:\n{text}"
        );
        assert_eq!(text.matches("passed").count(), files.len(), "{text}");
    }
}
