//! Manifests for `roster apply -f` / `roster plan -f`: YAML (or JSON) text through the loader
//! (`roster::site::load_text`, the one `load` uses for each file), with the default namespace
//! `--namespace physics`.
//!
//! Properties besides "no panic" (and, with libFuzzer's -rss_limit_mb and -timeout, no YAML
//! bomb or runaway document):
//! - everything the loader accepts passes admission's validation (`validate_object`), sits
//!   under its own namespace/name, in a namespace that is a DNS label, with names free of
//!   control characters and account usernames of the API's username rule;
//! - load → write (as JSON documents) → load gives the same site.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use roster::api::validate::validate_object;
use roster::site::{Key, Site, load_text};
use serde_json::Value;

static USERNAME: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(roster::api::NAME_PATTERN).unwrap());

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(site) = load_text("fuzz.yaml", text, Some("physics")) else {
        return;
    };
    let docs = documents(&site);
    for (kind, key, value) in &docs {
        check(kind, key, value);
    }
    for a in site.accounts.values() {
        let u = &a.spec.username;
        assert!(USERNAME.is_match(u), "accepted username {u:?}");
    }
    // Written back as one stream of JSON documents (JSON is YAML) and read again.
    let mut stream = String::new();
    for (_, _, value) in &docs {
        stream.push_str("---\n");
        stream.push_str(&serde_json::to_string(value).unwrap());
        stream.push('\n');
    }
    let again = load_text("fuzz.yaml", &stream, None)
        .unwrap_or_else(|e| panic!("{e:?} reading back {stream}"));
    assert_eq!(documents(&again), docs, "{stream}");
});

/// Every object of the site as (kind, key, JSON), in a stable order.
fn documents(site: &Site) -> Vec<(&'static str, Key, Value)> {
    fn all<T: serde::Serialize>(
        kind: &'static str,
        objects: impl Iterator<Item = (Key, T)>,
    ) -> Vec<(&'static str, Key, Value)> {
        objects
            .map(|(k, o)| (kind, k, serde_json::to_value(o).unwrap()))
            .collect()
    }
    let mut out = all("Person", site.people.iter().map(|(k, o)| (k.clone(), o)));
    out.extend(all(
        "Account",
        site.accounts.iter().map(|(k, o)| (k.clone(), o)),
    ));
    out.extend(all(
        "Project",
        site.projects.iter().map(|(k, o)| (k.clone(), o)),
    ));
    out.extend(all(
        "Guest",
        site.guests.iter().map(|(k, o)| (k.clone(), o)),
    ));
    out.extend(all(
        "ImportSource",
        site.imports.iter().map(|(k, (o, _))| (k.clone(), o)),
    ));
    out
}

fn check(kind: &str, key: &Key, value: &Value) {
    assert_eq!(value["kind"], kind);
    assert_eq!(value["metadata"]["name"], key.name.as_str());
    assert_eq!(value["metadata"]["namespace"], key.namespace.as_str());
    let ns = &key.namespace;
    assert!(
        !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "namespace {ns:?}"
    );
    assert!(
        !key.name.is_empty() && !key.name.chars().any(char::is_control),
        "name {:?}",
        key.name
    );
    if let Err(errors) = validate_object(value, None) {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("the loader accepted a {kind} admission refuses: {text:?}\n{value:#}");
    }
}
