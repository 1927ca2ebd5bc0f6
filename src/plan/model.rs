//! What a plan is made of: operations on directory entries and the status of each declared
//! object. Plain data, so tests can compare plans as values.

use std::collections::BTreeMap;
use std::fmt;

use crate::api::Phase;
use crate::site::Key;

/// The kinds a plan speaks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    Person,
    Account,
    Project,
    Guest,
    ImportSource,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A declared (or formerly declared) object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub kind: Kind,
    pub key: Key,
}

impl Target {
    pub fn new(kind: Kind, key: &Key) -> Target {
        Target {
            kind,
            key: key.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// Attribute name → values, as written to the directory.
pub type Attrs = BTreeMap<String, Vec<String>>;

/// Where a number of a new entry comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Number {
    /// Declared, or kept from the directory or a tombstone.
    Fixed(u32),
    /// Allocated at apply time from the counter.
    Allocate,
    /// The gid of the group with this name (existing, or created earlier in the same apply).
    GidOfGroup(String),
    /// The uid of the account with this username (created earlier in the same apply).
    UidOfAccount(String),
}

/// One change to one attribute of an existing entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttrChange {
    /// Replace every value; an empty list removes the attribute.
    Replace(String, Vec<String>),
    /// Add these values.
    Add(String, Vec<String>),
    /// Remove these values.
    Delete(String, Vec<String>),
}

/// One write to the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create an entry. `uid`/`gid` fill `uidNumber`/`gidNumber` when not `None`.
    Add {
        target: Target,
        dn: String,
        attrs: Attrs,
        uid: Option<Number>,
        gid: Option<Number>,
        /// A human summary, e.g. "account ada".
        what: String,
    },
    /// Change an entry.
    Modify {
        target: Target,
        dn: String,
        changes: Vec<AttrChange>,
        what: String,
    },
    /// Remove an entry (purge; its tombstone is written first).
    Delete {
        target: Target,
        dn: String,
        what: String,
    },
}

impl Op {
    pub fn target(&self) -> &Target {
        match self {
            Op::Add { target, .. } | Op::Modify { target, .. } | Op::Delete { target, .. } => {
                target
            }
        }
    }
    /// `add`, `modify` or `delete`: the directory operation, for metrics and JSON.
    pub fn verb(&self) -> &'static str {
        match self {
            Op::Add { .. } => "add",
            Op::Modify { .. } => "modify",
            Op::Delete { .. } => "delete",
        }
    }

    pub fn dn(&self) -> &str {
        match self {
            Op::Add { dn, .. } | Op::Modify { dn, .. } | Op::Delete { dn, .. } => dn,
        }
    }
}

impl Op {
    fn symbol(&self) -> &'static str {
        match self {
            Op::Add { .. } => "+",
            Op::Modify { .. } => "~",
            Op::Delete { .. } => "-",
        }
    }

    /// One line for humans, e.g. `+ Account physics/ada: username ada (uidNumber allocated)`.
    pub fn describe(&self) -> String {
        match self {
            Op::Add {
                target,
                what,
                uid,
                gid,
                ..
            } => {
                let mut extra = vec![];
                for (name, n) in [("uidNumber", uid), ("gidNumber", gid)] {
                    match n {
                        Some(Number::Fixed(v)) => extra.push(format!("{name} {v}")),
                        Some(Number::Allocate) => extra.push(format!("{name} allocated")),
                        Some(Number::UidOfAccount(_)) => extra.push(format!("{name} = uidNumber")),
                        Some(Number::GidOfGroup(g)) => extra.push(format!("{name} of group {g}")),
                        None => {}
                    }
                }
                format!("+ {target}: {what} ({})", extra.join(", "))
            }
            Op::Modify {
                target,
                what,
                changes,
                ..
            } => {
                let attrs: Vec<String> = changes
                    .iter()
                    .map(|c| match c {
                        AttrChange::Replace(a, v) if v.is_empty() => format!("-{a}"),
                        AttrChange::Replace(a, _) => a.clone(),
                        AttrChange::Add(a, v) => format!("+{a} {}", v.join(" ")),
                        AttrChange::Delete(a, v) => format!("-{a} {}", v.join(" ")),
                    })
                    .collect();
                format!("{} {target}: {what}: {}", self.symbol(), attrs.join(", "))
            }
            Op::Delete { target, what, .. } => format!("- {target}: {what}"),
        }
    }
}

/// A condition as a plan computes it (status writers add times and generations).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cond {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// The computed status of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStatus {
    pub target: Target,
    pub phase: Phase,
    pub conditions: Vec<Cond>,
    pub uid_number: Option<u32>,
    pub gid_number: Option<u32>,
    pub dn: Option<String>,
    /// Effective memberships (accounts) or member count source (projects).
    pub projects: Vec<String>,
    pub members: usize,
    /// The next scheduled lifecycle transition: what and when.
    pub next_transition: Option<(&'static str, jiff::Timestamp)>,
}

impl ObjectStatus {
    pub fn new(target: Target) -> ObjectStatus {
        ObjectStatus {
            target,
            phase: Phase::Pending,
            conditions: Vec::new(),
            uid_number: None,
            gid_number: None,
            dn: None,
            projects: Vec::new(),
            members: 0,
            next_transition: None,
        }
    }

    pub fn is_blocked(&self) -> bool {
        matches!(self.phase, Phase::Invalid | Phase::Conflict)
    }

    /// Held by the mass-deactivation guard.
    pub fn is_guarded(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == "Guarded" && c.status)
    }

    pub fn message(&self) -> Option<&str> {
        self.conditions
            .iter()
            .find(|c| matches!(c.type_, "Invalid" | "Conflict") && c.status)
            .map(|c| c.message.as_str())
    }
}

/// The outcome of planning: operations in the order they must run, every object's status,
/// and when to look again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Every object's status, sorted by target.
    pub objects: Vec<ObjectStatus>,
    pub next_wakeup: Option<jiff::Timestamp>,
    /// The instant the plan was made for.
    pub now: jiff::Timestamp,
    /// (username, group): memberships in declared projects' groups of identities this plan
    /// does not declare (another namespace's, absent without `--prune`, removed and not purged,
    /// an import's that did not run). The other backends keep what they hold of these: a run
    /// never takes from an identity it does not declare.
    pub retained: std::collections::BTreeSet<(String, String)>,
}

impl Plan {
    /// The status of one object: a binary search, as [`plan`](super::plan) leaves `objects`
    /// sorted by target (a linear search per object made Slurm's and Gold's desired state
    /// quadratic: seconds at 10,000 accounts).
    pub fn status_of(&self, kind: Kind, key: &Key) -> Option<&ObjectStatus> {
        debug_assert!(self.objects.is_sorted_by(|a, b| a.target < b.target));
        self.objects
            .binary_search_by(|o| (o.target.kind, &o.target.key).cmp(&(kind, key)))
            .ok()
            .map(|i| &self.objects[i])
    }

    /// True when some object is Invalid, in Conflict, or held by the guard.
    pub fn has_blocked(&self) -> bool {
        self.objects
            .iter()
            .any(|o| o.is_blocked() || o.is_guarded())
    }
}
