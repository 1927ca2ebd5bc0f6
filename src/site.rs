//! The declared state of a site: the Persons, Accounts, Projects, Guests and ImportSources to
//! converge, and the manifest loader of file mode (the operator builds its site from its caches:
//! `converge::Declared::from_stores`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use kube::Resource;
use serde_json::Value;

use crate::api::{Account, Person, Project};

/// Namespace and name of a declared object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Key {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a namespaced resource.
    pub fn of<K: Resource>(obj: &K) -> Key {
        let m = obj.meta();
        Key::new(
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything declared, keyed and ordered by namespace and name.
#[derive(Clone, Debug, Default)]
pub struct Site {
    pub people: BTreeMap<Key, Person>,
    pub accounts: BTreeMap<Key, Account>,
    pub projects: BTreeMap<Key, Project>,
    /// Guests; they stand for Persons and Accounts (`crate::guest::expand`).
    pub guests: BTreeMap<Key, crate::api::Guest>,
    /// ImportSources, with the directory of the manifest that declared each (a CSV `path` is
    /// relative to it).
    pub imports: BTreeMap<Key, (crate::api::ImportSource, std::path::PathBuf)>,
    /// ConfigMaps declared with them (`v1`; `data`, and `binaryData` that is UTF-8): what an
    /// ImportSource's `configMapRef` reads in file mode, as the cluster has it in the operator.
    pub config_maps: BTreeMap<Key, BTreeMap<String, String>>,
}

impl Site {
    /// Namespaces that appear in the declaration (the scope of `--prune`).
    pub fn namespaces(&self) -> std::collections::BTreeSet<String> {
        self.people
            .keys()
            .chain(self.accounts.keys())
            .chain(self.projects.keys())
            .chain(self.guests.keys())
            .chain(self.imports.keys())
            .map(|k| k.namespace.clone())
            .collect()
    }
}

/// One reason a manifest could not be used, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// `file` or `file#N` (the N-th YAML document, from 1).
    pub source: String,
    /// `Kind namespace/name` when known.
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            // A name from the manifest is shown with its control characters escaped: an error
            // message must not move a terminal's cursor or hide what follows.
            Some(o) => write!(f, "{}: {}: {}", self.source, o.escape_debug(), self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

/// The largest manifest input Roster reads (all files together), so a runaway file or a
/// YAML bomb fails fast instead of eating the machine.
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Reads manifests from files, directories (recursively; `.yaml`, `.yml`, `.json`) or `-`
/// (stdin), validates every document as admission would, and builds the site. Every problem is
/// reported; nothing is returned unless all documents are usable.
pub fn load(
    paths: &[PathBuf],
    default_namespace: Option<&str>,
) -> Result<Site, Vec<ManifestError>> {
    let mut errors = Vec::new();
    let mut docs: Vec<(String, String)> = Vec::new();
    let mut total = 0usize;
    for path in paths {
        for (name, text) in read_inputs(path, &mut errors) {
            total += text.len();
            if total > MAX_INPUT_BYTES {
                errors.push(ManifestError {
                    source: name,
                    object: None,
                    message: format!("input exceeds {MAX_INPUT_BYTES} bytes"),
                });
                return Err(errors);
            }
            docs.push((name, text));
        }
    }
    build(docs, default_namespace, errors)
}

/// [`load`] of one manifest text (`name` stands for its file in messages): the same parsing,
/// limits and validation, without reading files (the fuzz targets use it).
pub fn load_text(
    name: &str,
    text: &str,
    default_namespace: Option<&str>,
) -> Result<Site, Vec<ManifestError>> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(vec![ManifestError {
            source: name.to_string(),
            object: None,
            message: format!("input exceeds {MAX_INPUT_BYTES} bytes"),
        }]);
    }
    build(
        vec![(name.to_string(), text.to_string())],
        default_namespace,
        Vec::new(),
    )
}

/// The site declared by `docs` (`(name, text)` of each input), unless there is a problem in
/// them or already in `errors`.
fn build(
    docs: Vec<(String, String)>,
    default_namespace: Option<&str>,
    mut errors: Vec<ManifestError>,
) -> Result<Site, Vec<ManifestError>> {
    let mut site = Site::default();
    let mut seen: BTreeMap<(String, Key), String> = BTreeMap::new();
    for (name, text) in docs {
        let values: Vec<Value> =
            match serde_saphyr::from_multiple_with_options(&text, yaml_options()) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(ManifestError {
                        source: name,
                        object: None,
                        message: format!("not valid YAML: {e}"),
                    });
                    continue;
                }
            };
        for (i, value) in values.into_iter().enumerate() {
            let source = format!("{name}#{}", i + 1);
            if value.is_null() {
                continue;
            }
            if let Err(e) = add_document(&mut site, &mut seen, value, default_namespace, &source) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(site)
    } else {
        Err(errors)
    }
}

/// The YAML parser's limits: large enough for a site of 100,000 objects in one stream, small
/// enough that alias bombs and runaway documents fail fast (the alias ratio guard stays on).
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 250_000;
    budget.max_nodes = 10_000_000;
    budget.max_events = 40_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn add_document(
    site: &mut Site,
    seen: &mut BTreeMap<(String, Key), String>,
    mut value: Value,
    default_namespace: Option<&str>,
    source: &str,
) -> Result<(), ManifestError> {
    let err = |object: Option<String>, message: String| ManifestError {
        source: source.to_string(),
        object,
        message,
    };
    if let Some(items) = value.get("items").and_then(Value::as_array)
        && value.get("kind").and_then(Value::as_str) == Some("List")
    {
        let _ = items;
        return Err(err(
            None,
            "kind List is not supported; write one document per object".into(),
        ));
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if api_version == "v1" && kind == "ConfigMap" {
        return config_map(site, seen, &value, default_namespace, source);
    }
    if api_version != "roster.io/v1alpha1" {
        return Err(err(
            None,
            format!("apiVersion {api_version:?} is not roster.io/v1alpha1 (kind {kind:?})"),
        ));
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(err(Some(kind), "metadata.name: Required value".into()));
    }
    let namespace = match value.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => ns.to_string(),
        None => match default_namespace {
            Some(ns) => {
                value["metadata"]["namespace"] = Value::String(ns.to_string());
                ns.to_string()
            }
            None => {
                return Err(err(
                    Some(format!("{kind} {name}")),
                    "metadata.namespace is not set (set it or pass --namespace)".into(),
                ));
            }
        },
    };
    let key = Key::new(&namespace, &name);
    let object = Some(format!("{kind} {key}"));
    if !is_dns_label(&namespace) {
        return Err(err(
            object,
            format!("metadata.namespace: Invalid value: {namespace:?}"),
        ));
    }
    if let Err(errors) = crate::api::validate::validate_object(&value, None) {
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(err(object, text));
    }
    if let Some(first) = seen.insert((kind.clone(), key.clone()), source.to_string()) {
        return Err(err(object, format!("declared twice (first at {first})")));
    }
    // An explicit null in a nullable field passes `has()` in a CEL rule, but the typed object
    // Roster acts on has no such field: that object is checked too, so a rule such as "a
    // Technical guest needs an adminGroup" cannot be met by `adminGroup: null` (found by fuzzing).
    let nulls = has_null(&value);
    let parse_err = |e: String| err(object.clone(), e);
    match kind.as_str() {
        "Person" => {
            site.people
                .insert(key, typed(value, nulls).map_err(parse_err)?);
        }
        "Account" => {
            site.accounts
                .insert(key, typed(value, nulls).map_err(parse_err)?);
        }
        "Project" => {
            site.projects
                .insert(key, typed(value, nulls).map_err(parse_err)?);
        }
        "Guest" => {
            site.guests
                .insert(key, typed(value, nulls).map_err(parse_err)?);
        }
        "ImportSource" => {
            let file = source.rsplit_once('#').map_or(source, |(f, _)| f);
            let dir = std::path::Path::new(file)
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            let src = typed(value, nulls).map_err(parse_err)?;
            site.imports.insert(key, (src, dir));
        }
        other => return Err(err(object, format!("unknown kind {other:?}"))),
    }
    Ok(())
}

/// A `v1` ConfigMap among the manifests (the data an ImportSource reads, kept in the same
/// repository): its keys as text.
fn config_map(
    site: &mut Site,
    seen: &mut BTreeMap<(String, Key), String>,
    value: &Value,
    default_namespace: Option<&str>,
    source: &str,
) -> Result<(), ManifestError> {
    let err = |object: Option<String>, message: String| ManifestError {
        source: source.to_string(),
        object,
        message,
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(namespace) = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .or(default_namespace)
    else {
        return Err(err(
            Some(format!("ConfigMap {name}")),
            "metadata.namespace is not set (set it or pass --namespace)".into(),
        ));
    };
    let key = Key::new(namespace, name);
    let object = Some(format!("ConfigMap {key}"));
    if let Some(problem) = crate::api::validate::dns_subdomain_problem(name) {
        return Err(err(object, format!("metadata.name: {problem}")));
    }
    if !is_dns_label(namespace) {
        return Err(err(
            object,
            format!("metadata.namespace: Invalid value: {namespace:?}"),
        ));
    }
    let mut data = BTreeMap::new();
    for (k, v) in value
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let text = v
            .as_str()
            .ok_or_else(|| err(object.clone(), format!("data.{k}: not a string")))?;
        data.insert(k.clone(), text.to_string());
    }
    for (k, v) in value
        .get("binaryData")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        use base64::Engine as _;
        let bytes = v
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| err(object.clone(), format!("binaryData.{k}: not base64")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| err(object.clone(), format!("binaryData.{k}: not UTF-8 text")))?;
        if data.insert(k.clone(), text).is_some() {
            return Err(err(object, format!("{k} is in data and in binaryData")));
        }
    }
    if let Some(first) = seen.insert(("ConfigMap".into(), key.clone()), source.to_string()) {
        return Err(err(object, format!("declared twice (first at {first})")));
    }
    site.config_maps.insert(key, data);
    Ok(())
}

fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => items.iter().any(has_null),
        Value::Object(fields) => fields.values().any(has_null),
        _ => false,
    }
}

/// The typed object of a validated document; when the document had explicit nulls, the typed
/// object (which has none) must pass admission as well.
fn typed<K: serde::de::DeserializeOwned + serde::Serialize>(
    value: Value,
    nulls: bool,
) -> Result<K, String> {
    let object: K = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if nulls {
        crate::api::validate::validate_typed(&object)?;
    }
    Ok(object)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `(display name, content)` of every input under `path`, sorted by path for a stable order.
fn read_inputs(path: &Path, errors: &mut Vec<ManifestError>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let push_err = |errors: &mut Vec<ManifestError>, p: &Path, e: std::io::Error| {
        errors.push(ManifestError {
            source: p.display().to_string(),
            object: None,
            message: format!("cannot read: {e}"),
        })
    };
    if path == Path::new("-") {
        match read_bounded(std::io::stdin()) {
            Ok(text) => out.push(("<stdin>".to_string(), text)),
            Err(e) => push_err(errors, path, e),
        }
        return out;
    }
    if path.is_dir() {
        let mut files = Vec::new();
        collect_files(path, &mut files, errors);
        files.sort();
        for f in files {
            match std::fs::File::open(&f).and_then(read_bounded) {
                Ok(text) => out.push((f.display().to_string(), text)),
                Err(e) => push_err(errors, &f, e),
            }
        }
        return out;
    }
    match std::fs::File::open(path).and_then(read_bounded) {
        Ok(text) => out.push((path.display().to_string(), text)),
        Err(e) => push_err(errors, path, e),
    }
    out
}

/// Reads at most [`MAX_INPUT_BYTES`] + 1 bytes (so the caller sees that the input is too large
/// without a huge file, or `/dev/zero`, being read to its end) and checks they are UTF-8,
/// naming the line of the first byte that is not.
fn read_bounded(input: impl Read) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 (the first invalid byte is on line {line})"),
        )
    })
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<ManifestError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(ManifestError {
                source: dir.display().to_string(),
                object: None,
                message: format!("cannot read directory: {e}"),
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        let is_link = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        if p.is_dir() && !is_link {
            collect_files(&p, files, errors);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(p);
        }
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;

    /// A ConfigMap among the manifests is data for an ImportSource: its keys as text, errors
    /// named; two of one name are refused like any object declared twice.
    #[test]
    fn config_maps_in_the_manifests_are_read_and_checked() {
        let cm = |extra: &str| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: hr, namespace: physics}}\n{extra}"
            )
        };
        let site = load_text(
            "m.yaml",
            &cm("data: {a.csv: \"x;y\\n\"}\nbinaryData: {b.csv: YQ==}\n"),
            None,
        )
        .unwrap();
        let data = &site.config_maps[&Key::new("physics", "hr")];
        assert_eq!(
            (data["a.csv"].as_str(), data["b.csv"].as_str()),
            ("x;y\n", "a")
        );
        let message = |text: &str| load_text("m.yaml", text, None).unwrap_err()[0].to_string();
        assert!(
            message(&cm("binaryData: {b.csv: '***'}\n")).contains("binaryData.b.csv: not base64")
        );
        assert!(message(&cm("data: {a.csv: 1}\n")).contains("data.a.csv: not a string"));
        assert!(message(&format!("{}---\n{}", cm(""), cm(""))).contains("declared twice"));
        let unnamed = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hr}\n";
        assert!(message(unnamed).contains("metadata.namespace is not set"));
        assert!(load_text("m.yaml", unnamed, Some("physics")).is_ok());
        // Other v1 kinds are still not Roster's.
        assert!(
            message("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: p}\n")
                .contains("is not roster.io/v1alpha1")
        );
    }

    #[test]
    fn a_null_cannot_meet_a_rule_that_the_typed_object_breaks() {
        let guest = |admin: &str| {
            format!(
                "apiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {{name: bot, namespace: physics}}\n\
                 spec:\n  type: Technical\n  host: ada\n  adminGroup: {admin}\n  \
                 person: {{givenName: B, familyName: Bot}}\n  account: {{username: bot}}\n"
            )
        };
        for null in ["null", "~", "!optics"] {
            let errors = load_text("g.yaml", &guest(null), None).unwrap_err();
            assert!(
                errors[0]
                    .message
                    .contains("a Technical guest needs an adminGroup"),
                "{null}: {errors:?}"
            );
        }
        let site = load_text("g.yaml", &guest("optics"), None).unwrap();
        assert_eq!(site.guests.len(), 1);
    }

    #[test]
    fn inputs_are_read_bounded_and_only_as_utf8() {
        let dir = std::env::temp_dir().join(format!("roster-site-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let latin1 = dir.join("latin1.yaml");
        std::fs::write(&latin1, b"kind: Person\nspec: {givenName: J\xfcrgen}\n").unwrap();
        let control = dir.join("control.yaml");
        std::fs::write(
            &control,
            "kind: Person\napiVersion: roster.io/v1alpha1\nmetadata: {name: \"a\\e[2Jb\", namespace: x}\n",
        )
        .unwrap();
        let errors = load(&[control], None).unwrap_err();
        let shown = errors[0].to_string();
        assert!(!shown.contains('\u{1b}'), "{shown:?}");
        assert!(
            shown.contains("Person x/a\\u{1b}[2Jb: ")
                && shown.contains("metadata.name: Invalid value: \"a\\x1b[2Jb\""),
            "{shown:?}"
        );
        let errors = load(&[latin1], None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().ends_with(
                "latin1.yaml: cannot read: not UTF-8 (the first invalid byte is on line 2)"
            ),
            "{}",
            errors[0]
        );
        // A huge file is refused after reading just past the limit, not to its end.
        let big = dir.join("big.yaml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_INPUT_BYTES as u64 * 16)
            .unwrap();
        let errors = load(&[big], None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .contains(&format!("exceeds {MAX_INPUT_BYTES} bytes")),
            "{}",
            errors[0]
        );
        let endless = load(&[PathBuf::from("/dev/zero")], None).unwrap_err();
        assert!(endless[0].message.contains("exceeds"), "{}", endless[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
