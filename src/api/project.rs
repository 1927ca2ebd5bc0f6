//! `Project`: a group of accounts with a shared allocation — LDAP posixGroup, Slurm account,
//! Gold project.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// A group of accounts sharing an allocation. Effective membership is `members` ∪ `leaders` ∪
/// every Account whose `spec.projects` names this project.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "roster.io",
    version = "v1alpha1",
    kind = "Project",
    plural = "projects",
    namespaced,
    status = "ProjectStatus",
    shortname = "proj",
    category = "roster",
    doc = "A group of accounts with a shared allocation: LDAP posixGroup, Slurm account with associations, Gold project.",
    validation = kube::core::Rule::new("has(self.spec.groupName) || self.metadata.name.matches('^[a-z_][a-z0-9._-]{0,31}$')")
        .message("metadata.name is not a valid group name (1-32 of a-z, 0-9, '.', '_', '-'): set spec.groupName"),
    printcolumn(name = "Group", type_ = "string", json_path = ".status.groupName"),
    printcolumn(name = "GID", type_ = "integer", json_path = ".status.gidNumber"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.memberCount"),
    printcolumn(name = "Institute", type_ = "string", json_path = ".spec.institute", priority = 1),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = kube::core::Rule::new("has(self.groupName) == has(oldSelf.groupName) && (!has(self.groupName) || self.groupName == oldSelf.groupName)")
        .message("groupName is immutable"),
    validation = kube::core::Rule::new("!has(oldSelf.gidNumber) || (has(self.gidNumber) && self.gidNumber == oldSelf.gidNumber)")
        .message("gidNumber cannot be changed or removed once set")
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// The group, Slurm account and Gold project name, unique site-wide; defaults to
    /// `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z_][a-z0-9._-]{0,31}$')").message("groupName must be 1-32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or '_'"))]
    pub group_name: Option<String>,
    /// What the project is about; LDAP `description`, Slurm and Gold description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), pattern(TEXT_PATTERN))]
    pub description: Option<String>,
    /// The institute that owns the project; Slurm and Gold organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(TEXT_PATTERN))]
    pub institute: Option<String>,
    /// Usernames of the project's leaders: members who are also Slurm coordinators and Gold
    /// project admins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 32), pattern(NAME_PATTERN)))]
    pub leaders: Vec<String>,
    /// Usernames of the project's members (accounts may also join from their own side).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000), inner(length(max = 32), pattern(NAME_PATTERN)))]
    pub members: Vec<String>,
    /// The POSIX gid. Allocated from the configured range when absent; cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967294u32))]
    pub gid_number: Option<i64>,
    /// Last day (YYYY-MM-DD, UTC, inclusive) or instant (RFC 3339) of the project; afterwards
    /// its Slurm account is blocked and its Gold project deactivated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 35), pattern(DATE_PATTERN))]
    pub valid_until: Option<String>,
    /// Lock the project: its Slurm account and Gold project are blocked until unlocked.
    #[serde(default)]
    pub locked: bool,
    /// Slurm accounting settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmProject>,
    /// Gold allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold: Option<GoldProject>,
    /// What deleting this object does in the backends.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Time from removal to purge, overriding the configured grace period within its bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub purge_after: Option<String>,
}

/// How the project appears in Slurm accounting.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlurmProject {
    /// The clusters the account exists on (names from the configuration); default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64), pattern(r"^[a-z0-9_-]+$")))]
    pub clusters: Vec<String>,
    /// The parent Slurm account; default: the configured root of Roster's accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(NAME_PATTERN))]
    pub parent: Option<String>,
    /// Fairshare (`Fairshare=`) of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub fairshare: Option<i64>,
    /// QOS names the account may use (`QOS=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(max = 64), pattern(r"^[A-Za-z0-9_.-]+$"))
    )]
    pub qos: Vec<String>,
    /// The default QOS (`DefaultQOS=`); must be one of `qos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(r"^[A-Za-z0-9_.-]+$"))]
    pub default_qos: Option<String>,
    /// Restrict member associations to these partitions; empty: no partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(max = 64), pattern(r"^[A-Za-z0-9_.-]+$"))
    )]
    pub partitions: Vec<String>,
    /// Limits on the account association.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<SlurmLimits>,
    /// Remove associations of users Roster does not manage from this account (by default they
    /// are kept, e.g. after adopting an existing account).
    #[serde(default)]
    pub prune_unmanaged: bool,
}

/// Association limits as sacctmgr names them. Absent: unlimited.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlurmLimits {
    /// `GrpTRES`, e.g. `cpu=1000` and `gres/gpu=8`: resource name → count.
    #[serde(
        rename = "grpTRES",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "integer", "format": "int64", "minimum": 0}))]
    pub grp_tres: BTreeMap<String, i64>,
    /// `GrpTRESMins`: resource name → minutes.
    #[serde(
        rename = "grpTRESMins",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "integer", "format": "int64", "minimum": 0}))]
    pub grp_tres_mins: BTreeMap<String, i64>,
    /// `GrpJobs`: running jobs of the whole account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub grp_jobs: Option<i64>,
    /// `GrpSubmitJobs`: pending and running jobs of the whole account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub grp_submit_jobs: Option<i64>,
    /// `MaxJobs`: running jobs per member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub max_jobs: Option<i64>,
    /// `MaxSubmitJobs`: pending and running jobs per member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub max_submit_jobs: Option<i64>,
    /// `MaxWall`: longest job, as a duration such as `2d` or `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub max_wall: Option<String>,
}

/// The project's allocations in Gold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoldProject {
    /// Allocations, one per time window; each becomes a deposit on the project's Gold account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allocations: Vec<GoldAllocation>,
}

/// One allocation window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.end > self.start").message("an allocation must end after it starts"))]
pub struct GoldAllocation {
    /// Credits deposited for the window (Gold's unit, usually processor-seconds).
    #[schemars(range(min = 0))]
    pub amount: i64,
    /// First day of the window (YYYY-MM-DD or RFC 3339).
    #[schemars(length(max = 35), pattern(DATE_PATTERN))]
    pub start: String,
    /// Last day of the window (YYYY-MM-DD, inclusive, or RFC 3339).
    #[schemars(length(max = 35), pattern(DATE_PATTERN))]
    pub end: String,
    /// Note stored with the deposit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(TEXT_PATTERN))]
    pub description: Option<String>,
}

/// What Roster observed about a Project.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Conditions: `Ready`, `LdapSynced`, `SlurmSynced`, `GoldSynced`, `Conflict`, `Invalid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The group name in the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub group_name: Option<String>,
    /// The gid in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid_number: Option<i64>,
    /// Number of effective members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i32>,
    /// Lifecycle timestamps mirrored from the directory.
    #[serde(flatten)]
    pub lifecycle: Lifecycle,
}

#[cfg(test)]
mod tests {
    use crate::api::is_tres_name;

    #[test]
    fn tres_names_cannot_carry_another_sacctmgr_setting() {
        for ok in [
            "cpu",
            "mem",
            "node",
            "billing",
            "gres/gpu",
            "gres/gpu:a100",
            "license/m-2.0",
        ] {
            assert!(is_tres_name(ok), "{ok}");
        }
        for bad in [
            "",
            "cpu=1,mem",
            "cpu grpjobs",
            "a,b",
            "-i",
            "Cpu",
            "gres/",
            "/gpu",
            "gres/a b",
            "gres/a=b",
            "cpu\n",
            "where",
        ] {
            assert_eq!(is_tres_name(bad), bad == "where", "{bad:?}");
        }
    }
}
