//! Types shared by all five kinds: conditions, phases, lifecycle timestamps and the string
//! formats (usernames, dates, durations) that admission checks before Roster ever sees them.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// POSIX-portable login and group names as Slurm and most NSS back ends accept them:
/// lower case (sacctmgr lowercases account names), starting with a letter or underscore.
pub const NAME_PATTERN: &str = r"^[a-z_][a-z0-9._-]{0,31}$";
/// A Kubernetes object name in the same namespace (RFC 1123 subdomain).
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";
/// `YYYY-MM-DD` (valid through that day, UTC) or an RFC 3339 timestamp.
pub const DATE_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?$";
/// A duration as a sum of whole weeks, days, hours, minutes and seconds, e.g. `90d` or `1d12h`.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}[wdhms]){1,5}$";
/// An absolute path without control characters or whitespace.
pub const PATH_PATTERN: &str = r"^/[A-Za-z0-9._/+@-]{0,254}$";
/// A loose e-mail check; delivery is the mail system's business.
pub const EMAIL_PATTERN: &str = r"^[^@\s]{1,64}@[^@\s]{1,253}$";
/// One OpenSSH public key line: type, base64 blob and an optional comment.
pub const SSH_KEY_PATTERN: &str = r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?$";
/// Free text a human reads (descriptions, display names): printable, one line.
pub const TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f]*$";

/// Where an object is in its lifecycle (DESIGN.md §3), as `kubectl get` shows it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Declared, not yet written to every backend.
    Pending,
    /// Converged and usable.
    Active,
    /// Blocked in every backend (expired, locked, removed); nothing deleted yet.
    Deactivated,
    /// Removed from the backends; a tombstone keeps its names and numbers reserved.
    Purged,
    /// The declaration cannot be carried out as written; see the `Invalid` condition.
    Invalid,
    /// Another identity owns the name or number asked for; see the `Conflict` condition.
    Conflict,
}

/// What happens in the backends when the object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Deactivate now and purge after the configured grace period (the default).
    #[default]
    Deactivate,
    /// Leave the backend entries alone and stop managing them.
    Orphan,
    /// Deactivate and purge at once, still leaving a tombstone that reserves the names and numbers.
    PurgeImmediately,
}

/// The status of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Roster could not tell.
    Unknown,
}

/// One aspect of an object's state, following the Kubernetes API conventions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect: `Ready`, `LdapSynced`, `SlurmSynced`, `GoldSynced`, `Conflict`, `Invalid`,
    /// `Expiring`, `Guarded`, …
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// A CamelCase word a program can act on, such as `UsernameTaken` or `LdapUnreachable`.
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// What a human needs to know, naming the object, field and value involved.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The next lifecycle transition Roster has scheduled for an object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// What will happen: `Expire`, `WarnExpiry`, `Purge`, …
    #[schemars(length(max = 64))]
    pub action: String,
    /// When it will happen.
    pub at: Time,
}

/// The lifecycle fields every identity-bearing kind reports. The directory is authoritative for
/// them (DESIGN.md §5.2); status only mirrors it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// When the object was deactivated, as recorded in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<Time>,
    /// When the object will be (or was) purged, as recorded in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_at: Option<Time>,
    /// Why the object is deactivated: `Expired`, `Locked`, `Removed`, `PersonInactive`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub deactivation_reason: Option<String>,
    /// The next scheduled transition, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<Transition>,
}

/// A reference to a key in a Secret or ConfigMap in the object's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// The Secret's or ConfigMap's name.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A point in time (RFC 3339, UTC) as status carries it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct Time(pub jiff::Timestamp);

impl JsonSchema for Time {
    fn schema_name() -> Cow<'static, str> {
        "Time".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time", "maxLength": 64 })
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a date or duration string could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("{0:?} is not a date (YYYY-MM-DD) or an RFC 3339 timestamp")]
    Date(String),
    #[error("{0:?} is not a duration such as 90d, 12h or 1w2d")]
    Duration(String),
}

/// Reads a `validUntil`-style value. A bare date means "valid through that day (UTC)", so the
/// returned instant is the start of the following day: the moment validity ends.
pub fn parse_valid_until(value: &str) -> Result<jiff::Timestamp, FormatError> {
    let bad = || FormatError::Date(value.to_string());
    if value.len() == 10 {
        let date: jiff::civil::Date = value.parse().map_err(|_| bad())?;
        let next = date.tomorrow().map_err(|_| bad())?;
        return next
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|_| bad());
    }
    value.parse::<jiff::Timestamp>().map_err(|_| bad())
}

/// A validity as people write it: the date `D` for the end of day `D` (midnight UTC after it,
/// as [`parse_valid_until`] reads `D`), else the instant. `parse_valid_until` reads it back to
/// the same instant.
pub fn valid_until_text(t: jiff::Timestamp) -> String {
    let z = t.to_zoned(jiff::tz::TimeZone::UTC);
    let midnight =
        z.hour() == 0 && z.minute() == 0 && z.second() == 0 && z.subsec_nanosecond() == 0;
    match z.date().yesterday() {
        Ok(day) if midnight => day.to_string(),
        _ => t.to_string(),
    }
}

/// Reads a duration such as `90d`, `12h`, `1w2d` or `30m` (the units are w, d, h, m, s).
pub fn parse_duration(value: &str) -> Result<std::time::Duration, FormatError> {
    let bad = || FormatError::Duration(value.to_string());
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in value.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(d as u64))
                    .ok_or_else(bad)?,
            );
            continue;
        }
        let unit = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n = number.take().ok_or_else(bad)?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if number.is_some() || value.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_date_is_valid_through_that_day() {
        let end = parse_valid_until("2027-06-30").unwrap();
        assert_eq!(end.to_string(), "2027-07-01T00:00:00Z");
        let exact = parse_valid_until("2027-06-30T12:00:00+02:00").unwrap();
        assert_eq!(exact.to_string(), "2027-06-30T10:00:00Z");
        assert!(parse_valid_until("2027-02-30").is_err());
        assert!(parse_valid_until("tomorrow").is_err());
    }

    /// A validity is shown as declared, and reads back to the same instant.
    #[test]
    fn a_validity_is_shown_as_people_write_it() {
        for (declared, shown) in [
            ("2027-06-30", "2027-06-30"),
            ("2027-07-01T00:00:00Z", "2027-06-30"),
            ("2027-06-30T12:00:00+02:00", "2027-06-30T10:00:00Z"),
            ("2028-03-01", "2028-03-01"),
        ] {
            let t = parse_valid_until(declared).unwrap();
            assert_eq!(valid_until_text(t), shown, "{declared}");
            assert_eq!(parse_valid_until(shown).unwrap(), t, "{declared}");
        }
    }

    #[test]
    fn durations_add_up_their_units() {
        assert_eq!(parse_duration("90d").unwrap().as_secs(), 90 * 86_400);
        assert_eq!(
            parse_duration("1w2d3h").unwrap().as_secs(),
            9 * 86_400 + 3 * 3_600
        );
        assert_eq!(parse_duration("30m").unwrap().as_secs(), 1_800);
        for bad in ["", "d", "10", "5y", "1d-2h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
