//! `Person`: a human. It has no backend entry of its own; its Accounts do.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// A human being known to the site. Locking or expiring a Person deactivates all its Accounts.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "roster.io",
    version = "v1alpha1",
    kind = "Person",
    plural = "people",
    namespaced,
    status = "PersonStatus",
    shortname = "pers",
    category = "roster",
    doc = "A human known to the site: names, contact, affiliation and validity. Its Accounts carry the logins.",
    printcolumn(
        name = "Display-Name",
        type_ = "string",
        json_path = ".status.displayName"
    ),
    printcolumn(name = "Email", type_ = "string", json_path = ".spec.email"),
    printcolumn(name = "Institute", type_ = "string", json_path = ".spec.institute"),
    printcolumn(
        name = "Accounts",
        type_ = "integer",
        json_path = ".status.accountCount"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PersonSpec {
    /// Given (first) name(s), as the person writes them; umlauts and accents are kept.
    #[schemars(length(min = 1, max = 128), pattern(TEXT_PATTERN))]
    pub given_name: String,
    /// Family name (surname); LDAP `sn`.
    #[schemars(length(min = 1, max = 128), pattern(TEXT_PATTERN))]
    pub family_name: String,
    /// The name to show; defaults to "givenName familyName". LDAP `displayName` and `cn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(TEXT_PATTERN))]
    pub display_name: Option<String>,
    /// Contact e-mail address; LDAP `mail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 320), pattern(EMAIL_PATTERN))]
    pub email: Option<String>,
    /// The institute the person belongs to; LDAP `o`, Gold `Organization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(TEXT_PATTERN))]
    pub institute: Option<String>,
    /// Department or group within the institute; LDAP `ou`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(TEXT_PATTERN))]
    pub department: Option<String>,
    /// Telephone number; LDAP `telephoneNumber`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(r"^[0-9 ()+./-]*$"))]
    pub telephone_number: Option<String>,
    /// Last day (YYYY-MM-DD, UTC, inclusive) or instant (RFC 3339) of validity; afterwards all
    /// the person's Accounts are deactivated. Absent: no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35), pattern(DATE_PATTERN))]
    pub valid_until: Option<String>,
    /// Lock the person: all their Accounts are deactivated until unlocked.
    #[serde(default)]
    pub locked: bool,
    /// Why the person is locked, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), pattern(TEXT_PATTERN))]
    pub lock_reason: Option<String>,
}

impl PersonSpec {
    /// The name shown for the person: `displayName`, else "givenName familyName".
    pub fn display(&self) -> String {
        self.display_name
            .clone()
            .unwrap_or_else(|| format!("{} {}", self.given_name, self.family_name))
    }
}

/// What Roster observed about a Person.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Aggregate phase of the person's accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions: `Ready`, `Invalid`, `Expiring`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Names of the Accounts in this namespace that belong to the person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub accounts: Vec<String>,
    /// How many Accounts belong to the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_count: Option<i32>,
    /// The name shown (the directory's `cn`): `spec.displayName`, else "givenName familyName".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 257))]
    pub display_name: Option<String>,
    /// Lifecycle timestamps mirrored from the directory.
    #[serde(flatten)]
    pub lifecycle: Lifecycle,
}
