//! `Account`: a Person's login on the site, written to LDAP, Slurm and Gold.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// Login names no declaration may take: system accounts every Unix has.
pub const RESERVED_USERNAMES: &[&str] = &[
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "nobody", "slurm", "munge", "openldap", "sshd", "admin",
];

/// The admission rule that keeps [`RESERVED_USERNAMES`] out, built from the same list.
fn reserved_username_rule() -> kube::core::Rule {
    let names: Vec<String> = RESERVED_USERNAMES
        .iter()
        .map(|n| format!("'{n}'"))
        .collect();
    kube::core::Rule::new(format!("!(self in [{}])", names.join(", ")))
        .message("username is reserved for a system account")
}

/// System directories no home directory may be or lie in (a login whose home is `/etc` or
/// `/root` could write where only the system should).
pub const SYSTEM_DIRECTORIES: &str =
    "^/(etc|root|bin|sbin|lib[0-9a-z]*|usr|boot|dev|proc|sys|run|var/lib|var/run)(/|$)";

/// A person's login: POSIX account in LDAP, Slurm user with its associations, Gold user.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "roster.io",
    version = "v1alpha1",
    kind = "Account",
    plural = "accounts",
    namespaced,
    status = "AccountStatus",
    shortname = "acct",
    category = "roster",
    doc = "A person's login on the site: LDAP posixAccount, Slurm user and associations, Gold user.",
    printcolumn(name = "Username", type_ = "string", json_path = ".spec.username"),
    printcolumn(name = "UID", type_ = "integer", json_path = ".status.uidNumber"),
    printcolumn(name = "Person", type_ = "string", json_path = ".spec.person"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextTransition.action",
        priority = 1
    ),
    printcolumn(
        name = "At",
        type_ = "string",
        json_path = ".status.nextTransition.at",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.uidNumber) || (has(self.uidNumber) && self.uidNumber == oldSelf.uidNumber)"
).message("uidNumber cannot be changed or removed once set"))]
#[serde(rename_all = "camelCase")]
pub struct AccountSpec {
    /// The Person (in this namespace) the account belongs to. Immutable.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("person is immutable"))]
    pub person: String,
    /// The login name, unique site-wide and never reused. Immutable (renames are not supported).
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(
        validation = kube::core::Rule::new("self == oldSelf").message("username is immutable"),
        validation = kube::core::Rule::new("self.matches('^[a-z_][a-z0-9._-]{0,31}$')").message("username must be 1-32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or '_'"),
        validation = reserved_username_rule()
    )]
    pub username: String,
    /// The POSIX uid. Allocated from the configured range when absent; cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967294u32))]
    pub uid_number: Option<i64>,
    /// Login shell; defaults to the configured shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(PATH_PATTERN))]
    pub login_shell: Option<String>,
    /// Home directory; defaults to the configured template (e.g. `/home/{username}`).
    /// Roster records it but never creates or deletes home directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(PATH_PATTERN))]
    #[x_kube(
        validation = kube::core::Rule::new("!self.matches('(^|/)[.][.]?(/|$)')").message("homeDirectory must not contain '.' or '..' path segments"),
        validation = kube::core::Rule::new("self.matches('^(/[^/]+)+/?$')").message("homeDirectory must name a directory below / without empty segments"),
        validation = kube::core::Rule::new(format!("!self.matches('{SYSTEM_DIRECTORIES}')")).message("homeDirectory must not be in a system directory (/etc, /root, /bin, /sbin, /lib…, /usr, /boot, /dev, /proc, /sys, /run, /var/lib, /var/run)")
    )]
    pub home_directory: Option<String>,
    /// Projects (by name, in this namespace) this account is a member of, in addition to the
    /// Projects that list its username.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(max = 253), pattern(OBJECT_NAME_PATTERN))
    )]
    pub projects: Vec<String>,
    /// The project charged by default (Slurm DefaultAccount, Gold DefaultProject); must be one
    /// of the account's effective memberships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub default_project: Option<String>,
    /// OpenSSH public keys published in LDAP (`sshPublicKey`), one key per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 16384), pattern(SSH_KEY_PATTERN)))]
    pub ssh_public_keys: Vec<String>,
    /// Last day (YYYY-MM-DD, UTC, inclusive) or instant (RFC 3339) of validity. Absent: no end
    /// (the Person's own validity still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35), pattern(DATE_PATTERN))]
    pub valid_until: Option<String>,
    /// Lock the account: deactivated in every backend until unlocked.
    #[serde(default)]
    pub locked: bool,
    /// Why the account is locked, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), pattern(TEXT_PATTERN))]
    pub lock_reason: Option<String>,
    /// What deleting this object does in the backends.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Time from removal to purge, overriding the configured grace period within its bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub purge_after: Option<String>,
}

/// What Roster observed about an Account.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions: `Ready`, `LdapSynced`, `SlurmSynced`, `GoldSynced`, `Conflict`, `Invalid`,
    /// `Expiring`, `Guarded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The uid in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_number: Option<i64>,
    /// The primary gid in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid_number: Option<i64>,
    /// The account's entry in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub dn: Option<String>,
    /// Effective project memberships (group names), from both sides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 32)))]
    pub projects: Vec<String>,
    /// Lifecycle timestamps mirrored from the directory.
    #[serde(flatten)]
    pub lifecycle: Lifecycle,
}
