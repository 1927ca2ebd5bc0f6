//! The five custom resources of `roster.io/v1alpha1` (DESIGN.md §2) and the CRDs generated
//! from them.

// kube's `printcolumn(type_ = …)` repeats keys clippy mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

mod account;
mod common;
mod guest;
mod import_source;
pub mod names;
mod person;
mod project;
pub mod validate;

pub use account::*;
pub use common::*;
pub use guest::*;
pub use import_source::*;
pub use names::is_tres_name;
pub use person::*;
pub use project::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Roster kind.
pub const GROUP: &str = "roster.io";
/// The finalizer Roster puts on objects whose deletion must reach the backends.
pub const FINALIZER: &str = "roster.io/cleanup";
/// Annotation asking Roster to adopt existing backend entries (when the site allows it).
pub const ADOPT_ANNOTATION: &str = "roster.io/adopt";
/// Annotation on imported objects: the ImportSource's sourceUID.
pub const SOURCE_UID_ANNOTATION: &str = "roster.io/source-uid";
/// Annotation on imported objects: the record's key in its source.
pub const RECORD_UID_ANNOTATION: &str = "roster.io/record-uid";
/// Annotation on an ImportSource asking for a run now (any new value).
pub const RUN_REQUESTED_ANNOTATION: &str = "roster.io/run-requested";
/// Annotations an import puts on the Account of a record gone from its source (operator mode):
/// when it went, and the source's grace periods.
pub const GONE_AT_ANNOTATION: &str = "roster.io/gone-at";
pub const DEACTIVATE_AFTER_ANNOTATION: &str = "roster.io/deactivate-after";
pub const PURGE_AFTER_ANNOTATION: &str = "roster.io/purge-after";
/// Label on imported objects: a short hash of the sourceUID (labels are limited to 63
/// characters of `[A-Za-z0-9._-]`).
pub const SOURCE_LABEL: &str = "roster.io/source";

/// All CRDs in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Person::crd(),
        Account::crd(),
        Project::crd(),
        Guest::crd(),
        ImportSource::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, the form `roster crd` prints.
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| format!("---\n{yaml}"))
        .collect()
}

/// One `(file name, YAML)` per CRD, the form `crds/` holds: `<plural>.roster.io.yaml`.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd).expect("a CRD serializes to YAML");
            (format!("{name}.yaml"), yaml)
        })
        .collect()
}
