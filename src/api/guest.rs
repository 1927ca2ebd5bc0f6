//! `Guest`: a person sponsored by a host for a limited time (visitors, course participants,
//! collaborators) or a technical account someone vouches for.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// The kind of guest.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum GuestType {
    /// A human visitor; needs `validUntil`.
    #[default]
    Personal,
    /// A service or functional account; may be unlimited but needs an `adminGroup`.
    Technical,
}

/// A sponsored, time-limited identity. The Guest creates and owns its Person and Account.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "roster.io",
    version = "v1alpha1",
    kind = "Guest",
    plural = "guests",
    namespaced,
    status = "GuestStatus",
    shortname = "gst",
    category = "roster",
    doc = "A person sponsored by a host for a limited time, or a technical account someone vouches for.",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Valid-Until",
        type_ = "string",
        json_path = ".status.acceptedValidUntil"
    ),
    printcolumn(
        name = "Username",
        type_ = "string",
        json_path = ".spec.account.username",
        priority = 1
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
#[x_kube(
    validation = kube::core::Rule::new("self.type != 'Personal' || has(self.validUntil)")
        .message("a Personal guest needs validUntil"),
    validation = kube::core::Rule::new("self.type != 'Technical' || has(self.adminGroup)")
        .message("a Technical guest needs an adminGroup")
)]
#[serde(rename_all = "camelCase")]
pub struct GuestSpec {
    /// The sponsoring Person (in this namespace); must be active.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub host: String,
    /// A Project in this namespace whose leaders act for the guest when the host cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub admin_group: Option<String>,
    /// `Personal` (a human, time-limited) or `Technical` (a service account).
    #[serde(rename = "type")]
    pub type_: GuestType,
    /// Why the guest is here (visit, course, collaboration), for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), pattern(TEXT_PATTERN))]
    pub purpose: Option<String>,
    /// End of sponsorship (YYYY-MM-DD inclusive, or RFC 3339). Accepted only if no later than
    /// 12 months after the later of now and the previously accepted date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35), pattern(DATE_PATTERN))]
    pub valid_until: Option<String>,
    /// The Person to create for the guest.
    pub person: GuestPerson,
    /// The Account to create for the guest.
    pub account: GuestAccount,
    /// Service policy relative to `validUntil`; defaults per guest type come from the
    /// configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<GuestPolicy>,
}

/// The guest's person, as it will appear in the created Person.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestPerson {
    /// Given (first) name(s).
    #[schemars(length(min = 1, max = 128), pattern(TEXT_PATTERN))]
    pub given_name: String,
    /// Family name.
    #[schemars(length(min = 1, max = 128), pattern(TEXT_PATTERN))]
    pub family_name: String,
    /// Contact e-mail; also used to recognise the guest when the same person is imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 320), pattern(EMAIL_PATTERN))]
    pub email: Option<String>,
    /// The guest's home institution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(TEXT_PATTERN))]
    pub institute: Option<String>,
}

/// The guest's login, as it will appear in the created Account.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestAccount {
    /// The login name, unique site-wide and never reused.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z_][a-z0-9._-]{0,31}$')").message("username must be 1-32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or '_'"))]
    pub username: String,
    /// Login shell; defaults to the configured shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(PATH_PATTERN))]
    pub login_shell: Option<String>,
    /// Projects (in this namespace) the guest joins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(max = 253), pattern(OBJECT_NAME_PATTERN))
    )]
    pub projects: Vec<String>,
    /// The project charged by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub default_project: Option<String>,
    /// OpenSSH public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 16384), pattern(SSH_KEY_PATTERN)))]
    pub ssh_public_keys: Vec<String>,
}

/// When service ends relative to `validUntil`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestPolicy {
    /// Logins keep working this long after `validUntil` (e.g. `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub login_grace: Option<String>,
    /// The account is purged this long after `validUntil` (e.g. `60d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub purge_after: Option<String>,
}

/// What Roster observed about a Guest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase of the guest's account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions: `Ready`, `Invalid`, `Expiring`, `HostGone`, `Superseded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The validity Roster accepted last; the base for the 12-month extension rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35))]
    pub accepted_valid_until: Option<String>,
    /// Who answers for the guest now: the host, or the admin group when the host is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub acting_sponsor: Option<String>,
    /// The created Person's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub person: Option<String>,
    /// The created Account's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub account: Option<String>,
    /// When the ahead-of-expiry notice went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_notified_at: Option<Time>,
    /// Lifecycle timestamps mirrored from the directory.
    #[serde(flatten)]
    pub lifecycle: Lifecycle,
}
