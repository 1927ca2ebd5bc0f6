//! One import run, pure: source rows in, the Persons and Accounts they stand for out, plus
//! what is gone from the source and when it leaves — in the spirit of the UCS@school import
//! (records matched by (sourceUID, recordUID), usernames generated once and never again,
//! grace-period deactivation and purge timestamps), and safer: an empty or truncated export
//! trips the deletion guard instead of removing anyone, and bad rows above `toleratedErrors`
//! abort the run before any write.
//!
//! The directory is authoritative: an identity's username is the one its account entry (or
//! tombstone) carries with the same `rosterSourceUID`/`rosterRecordUID`, so re-runs, restarts
//! and switching modes never generate a second name for the same record.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::read::{Row, RowError};
use super::scheme::{self, Template};
use crate::api::validate::validate_typed;
use crate::api::{
    Account, AccountSpec, DeletionPolicy, ImportMode, ImportRun, ImportSource, Person, PersonSpec,
    RECORD_UID_ANNOTATION, SOURCE_LABEL, SOURCE_UID_ANNOTATION, parse_duration, parse_valid_until,
};
use crate::config::Config;
use crate::plan::{Entry, Observed};
use crate::site::{Key, Site};

/// The counter entries (`cn=username:<base>` under the counters container) that keep generated
/// usernames historically unique.
pub fn counter_cn(base: &str) -> String {
    format!("username:{base}")
}

/// The counter entries (`cn=mail:<bare address>`) that keep generated e-mail addresses
/// historically unique, as usernames'.
pub fn mail_counter_cn(bare: &str) -> String {
    format!("mail:{}", bare.to_ascii_lowercase())
}

/// The counter value stored under `cn`.
fn stored_counter(observed: &Observed, cn: &str) -> Option<u32> {
    observed
        .counters
        .get(cn)
        .and_then(|c| c.number("rosterCounterValue"))
}

/// The counters to write after a run (counter cn → next number): for each, the highest next
/// number among the generated names and addresses whose account (by username) is now
/// `written`, where the directory's counter is lower. A name that was not written (a row
/// refused later, a conflict, an aborted run) advances nothing, and a counter already there is
/// not written again.
pub fn counters_to_store(
    counters: &BTreeMap<String, Vec<(String, u32)>>,
    observed: &Observed,
    written: impl Fn(&str) -> bool,
) -> Vec<(String, u32)> {
    let mut out: BTreeMap<&str, u32> = BTreeMap::new();
    for (name, generated) in counters {
        if !written(name) {
            continue;
        }
        for (cn, next) in generated {
            if *next > stored_counter(observed, cn).unwrap_or(0) {
                let v = out.entry(cn).or_default();
                *v = (*v).max(*next);
            }
        }
    }
    out.into_iter().map(|(b, n)| (b.to_string(), n)).collect()
}

/// A short, label-safe hash of a sourceUID (FNV-1a, 64 bit, hex).
pub fn source_label(source_uid: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in source_uid.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// What one run comes to.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub people: BTreeMap<Key, Person>,
    pub accounts: BTreeMap<Key, Account>,
    /// Identities gone from the source (Sync mode, or action D), removed through the lifecycle.
    pub removed: BTreeMap<Key, DeletionPolicy>,
    pub purge_after: BTreeMap<Key, Duration>,
    pub deactivate_after: BTreeMap<Key, Duration>,
    /// Counters of the names and addresses this run generated for records that became
    /// objects: username → (counter cn, the counter's next number after it). Stored only once
    /// the account is written ([`counters_to_store`]): a row refused later advances nothing.
    pub counters: BTreeMap<String, Vec<(String, u32)>>,
    /// Rows that could not be used (read errors included), with their row numbers: nothing
    /// of them was imported.
    pub errors: Vec<RowError>,
    /// Rows imported with a problem (an e-mail address the scheme could not give them).
    pub warnings: Vec<RowError>,
    /// Why the run writes nothing at all (too many bad rows, the deletion guard …).
    pub aborted: Option<String>,
    /// Counts for the report (modified/unchanged are filled in by the caller from the plan).
    pub run: ImportRun,
    /// recordUID → username, for every record of the source in this run.
    pub usernames: BTreeMap<String, String>,
    /// What became of each row, and of each identity gone from the source (the summary).
    pub rows: Vec<RowSummary>,
    /// Row → recordUID, of every row that has one.
    record_uids: BTreeMap<usize, String>,
    /// Lines for the report: `+ created …`, `- gone …`, `x row N: …`.
    pub report: Vec<String>,
}

/// What a row (or an identity gone from the source) came to, for the run's summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowSummary {
    /// The row in the source (none for an identity the source no longer lists).
    pub row: Option<usize>,
    pub record_uid: String,
    pub action: RowAction,
    pub username: String,
    /// Errors (the row was skipped) or warnings (it was imported with them).
    pub problems: Vec<String>,
}

/// The summary's action of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowAction {
    New,
    /// Known before: `changed` or `unchanged`, which the caller knows from what it wrote.
    Existing,
    Reactivated,
    Gone,
    Skipped,
}

/// The columns of the summary CSV.
pub const SUMMARY_HEADER: &str = "source,row,recordUID,action,username,problems";

impl Outcome {
    /// The rows as the summary has them, in row order, the gone ones last: skipped rows with
    /// their errors, imported ones with their warnings; an aborted run imported nothing.
    fn finish_rows(&mut self) {
        let mut problems: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for e in &self.errors {
            problems.entry(e.row).or_default().push(e.message.clone());
        }
        let mut rows: BTreeMap<usize, RowSummary> = BTreeMap::new();
        for (&row, message) in &problems {
            rows.insert(
                row,
                RowSummary {
                    row: Some(row),
                    record_uid: self.record_uids.get(&row).cloned().unwrap_or_default(),
                    action: RowAction::Skipped,
                    username: String::new(),
                    problems: message.clone(),
                },
            );
        }
        let mut gone = vec![];
        for r in std::mem::take(&mut self.rows) {
            match r.row {
                Some(n) if r.action != RowAction::Gone => {
                    rows.entry(n).or_insert(r);
                }
                Some(n) => {
                    rows.insert(n, r);
                }
                None => gone.push(r),
            }
        }
        for w in &self.warnings {
            if let Some(r) = rows.get_mut(&w.row) {
                r.problems.push(w.message.clone());
            }
        }
        // Rows of the source that became nothing else (an action D for a record not imported).
        for (&row, uid) in &self.record_uids {
            rows.entry(row).or_insert_with(|| RowSummary {
                row: Some(row),
                record_uid: uid.clone(),
                action: RowAction::Existing,
                username: self.usernames.get(uid).cloned().unwrap_or_default(),
                problems: vec![],
            });
        }
        self.rows = rows.into_values().chain(gone).collect();
        if let Some(why) = &self.aborted {
            for r in &mut self.rows {
                if r.action != RowAction::Skipped {
                    r.action = RowAction::Skipped;
                    r.problems
                        .push(format!("not imported: the run was aborted ({why})"));
                }
            }
        }
    }
}

/// The summary as CSV ([`SUMMARY_HEADER`], CRLF line ends) of sources' rows: `changed(username)`
/// says whether a known identity's objects were written (`changed`) or left (`unchanged`).
pub fn summary_csv<'a>(
    sources: impl IntoIterator<Item = (&'a str, &'a [RowSummary])>,
    changed: &dyn Fn(&str) -> bool,
) -> String {
    let mut out = String::from(SUMMARY_HEADER);
    out.push_str("\r\n");
    for (source, rows) in sources {
        for r in rows {
            let action = match r.action {
                RowAction::New => "new",
                RowAction::Existing if changed(&r.username) => "changed",
                RowAction::Existing => "unchanged",
                RowAction::Reactivated => "reactivated",
                RowAction::Gone => "gone",
                RowAction::Skipped => "skipped",
            };
            let row = r.row.map(|n| n.to_string()).unwrap_or_default();
            let cells = [
                source,
                &row,
                &r.record_uid,
                action,
                &r.username,
                &r.problems.join("; "),
            ];
            let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
    }
    out
}

/// One CSV cell (RFC 4180): quoted when it holds a comma, a quote or a line break. A cell a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`: the
/// summary is opened in spreadsheets, and a source's values are not to be trusted there.
fn csv_cell(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Who has an e-mail address.
enum MailHolder {
    Account(String),
    Person(Key),
}

impl std::fmt::Display for MailHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailHolder::Account(u) => write!(f, "account {u}"),
            MailHolder::Person(k) => write!(f, "Person {k}"),
        }
    }
}

/// A record after mapping.
struct Record {
    number: usize,
    fields: BTreeMap<String, String>,
    record_uid: String,
    action: Option<char>,
}

/// The Kubernetes object name of an imported identity: its username, made a DNS name.
pub fn object_name(username: &str) -> String {
    username
        .replace('_', "-")
        .trim_matches(['-', '.'])
        .to_string()
}

fn field<'a>(f: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| f.get(*n))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// More bad rows than `toleratedErrors`: the run is aborted (reported, nothing changed).
fn abort_on_errors(out: &mut Outcome, tolerated: usize) -> bool {
    if out.errors.len() <= tolerated {
        return false;
    }
    for e in &out.errors {
        out.report.push(format!("x row {}: {}", e.row, e.message));
    }
    out.aborted = Some(format!(
        "{} bad row(s), more than toleratedErrors ({tolerated}); nothing was changed",
        out.errors.len()
    ));
    out.run.errors = out.errors.len() as i64;
    true
}

/// Runs the import over `rows` (already read) against the directory as `observed`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    source: &ImportSource,
    key: &Key,
    rows: &[Row],
    read_errors: &[RowError],
    site: &Site,
    observed: &Observed,
    config: &Config,
    now: jiff::Timestamp,
) -> Outcome {
    let mut out = run_records(source, key, rows, read_errors, site, observed, config, now);
    out.finish_rows();
    out
}

#[allow(clippy::too_many_arguments)]
fn run_records(
    source: &ImportSource,
    key: &Key,
    rows: &[Row],
    read_errors: &[RowError],
    site: &Site,
    observed: &Observed,
    config: &Config,
    now: jiff::Timestamp,
) -> Outcome {
    let spec = &source.spec;
    let mut out = Outcome::default();
    out.run.started_at = Some(crate::api::Time(now));
    out.run.dry_run = spec.dry_run;
    out.run.records = rows.len() as i64;
    out.errors.extend(read_errors.iter().cloned());
    let owned = |e: &Entry| e.is_managed_by(&config.manager_id);
    let from_here = |e: &Entry| owned(e) && e.first("rosterSourceUID") == Some(&spec.source_uid);

    let record_template = match Template::parse(&spec.record_uid) {
        Ok(t) => t,
        Err(e) => {
            out.aborted = Some(format!("spec.recordUID: {e}"));
            return out;
        }
    };
    let username_template = match spec
        .username_scheme
        .as_ref()
        .map(|s| Template::parse(&s.template))
    {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            out.aborted = Some(format!("spec.usernameScheme.template: {e}"));
            return out;
        }
        None => None,
    };
    let email_template = match spec.email_scheme.as_deref().map(Template::parse_email) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            out.aborted = Some(format!("spec.emailScheme: {e}"));
            return out;
        }
        None => None,
    };
    let list_delimiter = spec
        .reader
        .csv
        .as_ref()
        .and_then(|c| c.list_delimiter.clone())
        .unwrap_or_else(|| ",".into());

    // 1. Mapping: source columns → Roster fields (unmapped columns stay under their own name).
    let mut records: Vec<Record> = vec![];
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let mut f: BTreeMap<String, String> = BTreeMap::new();
        for (col, value) in &row.fields {
            match spec.mapping.get(col).map(String::as_str) {
                Some("__ignore") => {}
                Some(to) => {
                    f.insert(to.to_string(), value.clone());
                }
                None => {
                    f.entry(col.clone()).or_insert_with(|| value.clone());
                }
            }
        }
        let bad = |m: String| RowError {
            row: row.number,
            message: m,
        };
        let record_uid = match record_template.base(&f) {
            Ok(r) if !r.trim().is_empty() => r,
            Ok(_) => {
                out.errors.push(bad("the recordUID is empty".into()));
                continue;
            }
            Err(e) => {
                out.errors.push(bad(format!("recordUID: {e}")));
                continue;
            }
        };
        out.record_uids.insert(row.number, record_uid.clone());
        if let Some(first) = seen.insert(record_uid.clone(), row.number) {
            out.errors.push(bad(format!(
                "recordUID {record_uid:?} again (first in row {first})"
            )));
            continue;
        }
        let action = match field(&f, &["action"]).map(|a| a.to_ascii_uppercase()) {
            None => None,
            Some(a) if a == "A" || a == "M" || a == "D" => a.chars().next(),
            Some(a) => {
                out.errors
                    .push(bad(format!("action {a:?} is not A, M or D")));
                continue;
            }
        };
        if action != Some('D') {
            for (names, what) in [
                (&["givenName", "firstname"][..], "givenName"),
                (&["familyName", "lastname"][..], "familyName"),
            ] {
                if field(&f, names).is_none() {
                    out.errors.push(bad(format!("{what} is empty")));
                }
            }
            if out.errors.last().is_some_and(|e| e.row == row.number) {
                continue;
            }
        }
        records.push(Record {
            number: row.number,
            fields: f,
            record_uid,
            action,
        });
    }
    // Too many bad rows: nothing happens at all.
    let tolerated = spec.tolerated_errors.unwrap_or(0).max(0) as usize;
    if abort_on_errors(&mut out, tolerated) {
        return out;
    }

    // 2. The source's identities in the directory: recordUID → (username, entry or tombstone),
    //    and the object each belongs to (its owner), which stays its name for good.
    let mut known: BTreeMap<String, (String, Option<&Entry>)> = BTreeMap::new();
    let mut owner_name: BTreeMap<String, String> = BTreeMap::new();
    let owner_of = |e: &Entry| -> Option<String> {
        let o = e.owned_by()?;
        (o.kind == "Account" && o.namespace == key.namespace).then(|| o.name.to_string())
    };
    for e in observed.accounts.values().filter(|e| from_here(e)) {
        if let (Some(r), Some(u)) = (e.first("rosterRecordUID"), e.first("uid")) {
            known.insert(r.to_string(), (u.to_string(), Some(e)));
            if let Some(n) = owner_of(e) {
                owner_name.insert(r.to_string(), n);
            }
        }
    }
    for t in observed.tombstones.values().filter(|t| from_here(t)) {
        if let (Some(r), Some(u)) = (t.first("rosterRecordUID"), t.first("uid")) {
            if !known.contains_key(r)
                && let Some(n) = owner_of(t)
            {
                owner_name.insert(r.to_string(), n);
            }
            known
                .entry(r.to_string())
                .or_insert_with(|| (u.to_string(), None));
        }
    }
    // Guests whose person this source now brings (same e-mail): the import takes over their
    // account — the same object, username and uid.
    let guest_by_email: BTreeMap<String, (&Key, &crate::api::Guest)> = site
        .guests
        .iter()
        .filter(|(k, _)| k.namespace == key.namespace)
        .filter_map(|(k, g)| {
            g.spec
                .person
                .email
                .as_ref()
                .map(|e| (e.to_ascii_lowercase(), (k, g)))
        })
        .collect();

    // 3. Usernames: the known one, the source's, or a generated one (never a taken name, never
    //    a number a counter has passed).
    let declared: BTreeSet<&str> = site
        .accounts
        .values()
        .map(|a| a.spec.username.as_str())
        .collect();
    let mut assigned: BTreeSet<String> = known.values().map(|(u, _)| u.clone()).collect();
    let mut present: BTreeSet<String> = BTreeSet::new();
    let validity = spec
        .defaults
        .as_ref()
        .and_then(|d| d.validity.as_deref())
        .and_then(|v| parse_duration(v).ok());
    let label = source_label(&spec.source_uid);
    // Counters as this run advances them (a refused row's name stays taken within the run).
    let mut numbering: BTreeMap<String, u32> = BTreeMap::new();
    // Who has an address now: the directory's accounts and the declared Persons; and the
    // addresses this run gave (lower case → row), so no two people get the same one.
    let mut mail_holders: BTreeMap<String, Vec<MailHolder>> = BTreeMap::new();
    for (uid, e) in &observed.accounts {
        for m in e.values("mail") {
            mail_holders
                .entry(m.to_ascii_lowercase())
                .or_default()
                .push(MailHolder::Account(uid.clone()));
        }
    }
    for (k, p) in &site.people {
        if let Some(m) = &p.spec.email {
            mail_holders
                .entry(m.to_ascii_lowercase())
                .or_default()
                .push(MailHolder::Person(k.clone()));
        }
    }
    let mut mail_given: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.action != Some('D')) {
        let bad = |m: String| RowError {
            row: r.number,
            message: m,
        };
        let mut user_counter: Option<(String, u32)> = None;
        let guest = field(&r.fields, &["email"])
            .and_then(|e| guest_by_email.get(&e.to_ascii_lowercase()))
            .filter(|_| !known.contains_key(&r.record_uid));
        let username = if let Some((u, _)) = known.get(&r.record_uid) {
            u.clone()
        } else if let Some((gk, g)) = guest {
            owner_name.insert(r.record_uid.clone(), gk.name.clone());
            out.report.push(format!(
                "↪ row {}: {} is guest {gk}'s person; the import takes over {}",
                r.number, r.record_uid, g.spec.account.username
            ));
            g.spec.account.username.clone()
        } else if let Some(u) = field(&r.fields, &["username"]) {
            if assigned.contains(u)
                || declared.contains(u)
                || observed.accounts.contains_key(u)
                || observed.tombstones.contains_key(&format!("Account:{u}"))
            {
                out.errors.push(bad(format!("username {u:?} is taken")));
                continue;
            }
            u.to_string()
        } else if let Some(t) = &username_template {
            let max = spec
                .username_scheme
                .as_ref()
                .and_then(|s| s.max_length)
                .map(|m| m as usize);
            let base = scheme::username_base(t, &r.fields, max).unwrap_or_default();
            let next = numbering.get(&base).copied().or_else(|| {
                observed
                    .counters
                    .get(&counter_cn(&base))
                    .and_then(|c| c.number("rosterCounterValue"))
            });
            let taken = |n: &str| {
                assigned.contains(n)
                    || declared.contains(n)
                    || observed.accounts.contains_key(n)
                    || observed.tombstones.contains_key(&format!("Account:{n}"))
            };
            match scheme::username(t, &r.fields, max, next, &taken) {
                Ok((name, counter)) => {
                    if let Some(c) = counter {
                        user_counter = Some((counter_cn(&base), c));
                        numbering.insert(base, c);
                    }
                    name
                }
                Err(e) => {
                    out.errors.push(bad(format!("username: {e}")));
                    continue;
                }
            }
        } else {
            out.errors.push(bad(
                "no username: map a username column or set usernameScheme".into(),
            ));
            continue;
        };
        assigned.insert(username.clone());
        present.insert(r.record_uid.clone());
        let name = owner_name
            .get(&r.record_uid)
            .cloned()
            .unwrap_or_else(|| object_name(&username));
        let obj_key = Key::new(&key.namespace, &name);
        let mut problems: Vec<String> = vec![];
        let mut mail_counter = None;
        let email = match (field(&r.fields, &["email"]), &email_template) {
            (Some(e), _) => Some(e.to_string()),
            (None, Some(t)) => {
                let own = |h: &MailHolder| match h {
                    MailHolder::Account(u) => *u == username,
                    MailHolder::Person(k) => *k == obj_key,
                };
                let holder = |a: &str| -> Option<String> {
                    let a = a.to_ascii_lowercase();
                    if let Some((row, user)) = mail_given.get(&a) {
                        return Some(format!("row {row} ({user})"));
                    }
                    mail_holders
                        .get(&a)?
                        .iter()
                        .find(|h| !own(h))
                        .map(MailHolder::to_string)
                };
                // The address the person has keeps while the scheme still gives it to them.
                let current = known
                    .get(&r.record_uid)
                    .and_then(|(_, e)| *e)
                    .and_then(|e| e.first("mail"))
                    .filter(|m| scheme::email_matches(t, &r.fields, m) && holder(m).is_none());
                match current {
                    Some(m) => Some(m.to_string()),
                    None => {
                        let next = |bare: &str| {
                            let cn = mail_counter_cn(bare);
                            numbering
                                .get(&cn)
                                .copied()
                                .or_else(|| stored_counter(observed, &cn))
                        };
                        let bare = scheme::email(t, &r.fields);
                        let start = bare.as_deref().ok().and_then(next);
                        match scheme::email_numbered(t, &r.fields, start, &|a| holder(a).is_some())
                        {
                            Ok((address, None, _)) => match holder(&address) {
                                None => Some(address),
                                Some(h) => {
                                    problems.push(format!(
                                        "email: {}; imported without an e-mail address",
                                        scheme::SchemeError::EmailTaken {
                                            email: address,
                                            holder: h,
                                        }
                                    ));
                                    None
                                }
                            },
                            Ok((address, Some(n), bare)) => {
                                let cn = mail_counter_cn(&bare);
                                numbering.insert(cn.clone(), n);
                                mail_counter = Some((cn, n));
                                Some(address)
                            }
                            Err(e) => {
                                problems.push(format!(
                                    "email: {e}; imported without an e-mail address"
                                ));
                                None
                            }
                        }
                    }
                }
            }
            (None, None) => None,
        };
        let meta = || kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(BTreeMap::from([(SOURCE_LABEL.to_string(), label.clone())])),
            annotations: Some(BTreeMap::from([
                (SOURCE_UID_ANNOTATION.to_string(), spec.source_uid.clone()),
                (RECORD_UID_ANNOTATION.to_string(), r.record_uid.clone()),
            ])),
            ..Default::default()
        };
        let defaults = spec.defaults.clone().unwrap_or_default();
        let mut projects: Vec<String> = field(&r.fields, &["projects"])
            .map(|p| {
                p.split(list_delimiter.as_str())
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for p in defaults.projects.iter() {
            if !projects.contains(p) {
                projects.push(p.clone());
            }
        }
        let valid_until = match field(&r.fields, &["validUntil"]) {
            Some(v) => match parse_valid_until(v) {
                Ok(_) => Some(v.to_string()),
                Err(e) => {
                    out.errors.push(bad(format!("validUntil: {e}")));
                    continue;
                }
            },
            // A default validity counts from the account's creation, not from every run.
            None => validity.map(|d| {
                let created = known
                    .get(&r.record_uid)
                    .and_then(|(_, e)| *e)
                    .and_then(|e| e.first("createTimestamp"))
                    .and_then(crate::plan::parse_generalized_time)
                    .unwrap_or(now);
                (created + jiff::SignedDuration::from_secs(d.as_secs() as i64)).to_string()
            }),
        };
        let person = Person {
            metadata: meta(),
            spec: PersonSpec {
                given_name: field(&r.fields, &["givenName", "firstname"])
                    .unwrap_or("")
                    .into(),
                family_name: field(&r.fields, &["familyName", "lastname"])
                    .unwrap_or("")
                    .into(),
                display_name: field(&r.fields, &["displayName"]).map(str::to_string),
                email,
                institute: field(&r.fields, &["institute"])
                    .map(str::to_string)
                    .or(defaults.institute.clone()),
                department: field(&r.fields, &["department"]).map(str::to_string),
                telephone_number: field(&r.fields, &["telephoneNumber"]).map(str::to_string),
                ..Default::default()
            },
            status: None,
        };
        let account = Account {
            metadata: meta(),
            spec: AccountSpec {
                person: name.clone(),
                username: username.clone(),
                login_shell: field(&r.fields, &["loginShell"])
                    .map(str::to_string)
                    .or(defaults.login_shell.clone()),
                projects,
                valid_until,
                ..Default::default()
            },
            status: None,
        };
        // A record is admitted as `kubectl apply` of its objects would be: no control
        // characters, LDAP metacharacters or overlong values reach the backends from a source.
        if let Err(e) = validate_typed(&person)
            .map_err(|e| format!("Person {obj_key}: {e}"))
            .and_then(|()| validate_typed(&account).map_err(|e| format!("Account {obj_key}: {e}")))
        {
            out.errors.push(bad(e));
            continue;
        }
        let person_email = person.spec.email.clone();
        out.people.insert(obj_key.clone(), person);
        out.accounts.insert(obj_key.clone(), account);
        let counters: Vec<(String, u32)> = user_counter.into_iter().chain(mail_counter).collect();
        if !counters.is_empty() {
            out.counters.insert(username.clone(), counters);
        }
        if let Some(m) = &person_email {
            mail_given.insert(m.to_ascii_lowercase(), (r.number, username.clone()));
        }
        out.warnings
            .extend(problems.into_iter().map(|message| RowError {
                row: r.number,
                message,
            }));
        out.usernames.insert(r.record_uid.clone(), username.clone());
        let action = match known.get(&r.record_uid) {
            None => RowAction::New,
            Some((_, None)) => RowAction::Reactivated,
            Some((_, Some(e))) if e.is_gone() => RowAction::Reactivated,
            Some(_) => RowAction::Existing,
        };
        out.rows.push(RowSummary {
            row: Some(r.number),
            record_uid: r.record_uid.clone(),
            action,
            username: username.clone(),
            problems: vec![],
        });
        match known.get(&r.record_uid) {
            None => {
                out.run.created += 1;
                out.report.push(format!(
                    "+ row {}: {} creates {username}",
                    r.number, r.record_uid
                ));
            }
            Some((_, None)) => {
                out.run.created += 1;
                out.report.push(format!(
                    "+ row {}: {} comes back as {username} (purged before; same name and uid)",
                    r.number, r.record_uid
                ));
            }
            Some((_, Some(e))) if e.is_gone() => {
                out.run.reactivated += 1;
                out.report.push(format!(
                    "↺ row {}: {} is back; {username} is reactivated",
                    r.number, r.record_uid
                ));
            }
            Some(_) => {}
        }
    }

    // Rows refused while making their objects (a taken or hostile name) count too.
    if abort_on_errors(&mut out, tolerated) {
        out.people.clear();
        out.accounts.clear();
        out.usernames.clear();
        out.counters.clear();
        return out;
    }

    // 4. Gone: Sync mode removes what the source no longer lists; action D removes in any mode.
    let explicitly_gone: BTreeSet<&String> = records
        .iter()
        .filter(|r| r.action == Some('D'))
        .map(|r| &r.record_uid)
        .collect();
    let live: Vec<(&String, &String, &Entry)> = known
        .iter()
        .filter_map(|(r, (u, e))| e.map(|e| (r, u, e)))
        .collect();
    let gone: Vec<(&String, &String, &Entry)> = live
        .iter()
        .copied()
        .filter(|(r, _, _)| {
            !present.contains(*r) && (spec.mode == ImportMode::Sync || explicitly_gone.contains(r))
        })
        .collect();
    // The deletion guard: an empty or truncated export never removes anyone.
    let newly_gone = gone.iter().filter(|(_, _, e)| !e.is_gone()).count();
    let limits = spec.max_deletions.clone().unwrap_or_default();
    let percent = limits
        .percent
        .unwrap_or(if limits.count.is_some() { 100 } else { 10 });
    let by_percent = (live.len() * percent.max(0) as usize).div_ceil(100);
    let limit = match limits.count {
        Some(c) => (c.max(0) as usize).min(by_percent),
        None => by_percent,
    };
    if newly_gone > 0 && (newly_gone > limit || (rows.is_empty() && !live.is_empty())) {
        out.aborted = Some(format!(
            "deletion guard: {newly_gone} of {} identities of this source would be removed (limit {limit}: maxDeletions count {:?}, percent {percent}); nothing was changed — an empty or truncated export never removes anyone",
            live.len(),
            limits.count
        ));
        out.run.errors = out.errors.len() as i64;
        return out;
    }
    let grace = spec.deletion_grace_period.clone().unwrap_or_default();
    let deletion = if spec.deletion_grace_period.is_some() {
        Duration::from_secs(grace.deletion.max(0) as u64 * 86_400)
    } else {
        config.grace_periods.account_purge_after.get()
    };
    for (r, u, e) in gone {
        let Some(name) = owner_of(e) else {
            continue;
        };
        let k = Key::new(&key.namespace, name);
        out.removed.insert(k.clone(), DeletionPolicy::Deactivate);
        out.purge_after.insert(k.clone(), deletion);
        if grace.deactivation > 0 {
            out.deactivate_after
                .insert(k, Duration::from_secs(grace.deactivation as u64 * 86_400));
        }
        out.rows.push(RowSummary {
            row: records
                .iter()
                .find(|x| x.action == Some('D') && x.record_uid == *r)
                .map(|x| x.number),
            record_uid: r.clone(),
            action: RowAction::Gone,
            username: u.clone(),
            problems: vec![],
        });
        if !e.is_gone() {
            out.run.deactivated += 1;
            out.run.scheduled_for_purge += 1;
            out.report
                .push(format!("- {r}: {u} is gone from the source"));
        }
    }
    out.run.errors = out.errors.len() as i64;
    out.run.warnings = out.warnings.len() as i64;
    for e in &out.errors {
        out.report.push(format!("x row {}: {}", e.row, e.message));
    }
    for w in &out.warnings {
        out.report.push(format!("! row {}: {}", w.row, w.message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose values would be refused by admission is a bad row, never an object:
    /// LDAP DN and filter metacharacters, control characters, overlong and reserved names.
    #[test]
    fn records_are_admitted_like_the_objects_they_become() {
        let config = Config::parse(
            "managerId: t\nldap: {uri: 'ldap://127.0.0.1:1', bindDN: cn=a, bindPasswordFile: pw, baseDN: dc=t}\nuidRange: {min: 20000, max: 29999}\ngidRange: {min: 20000, max: 29999}\n",
            std::path::PathBuf::from("/"),
        )
        .unwrap();
        let source: ImportSource = serde_json::from_value(serde_json::json!({
            "apiVersion": "roster.io/v1alpha1",
            "kind": "ImportSource",
            "metadata": {"name": "hr", "namespace": "physics"},
            "spec": {
                "sourceUID": "hr",
                "reader": {"type": "Csv", "csv": {"path": "x.csv"}},
                "mapping": {"id": "employeeNumber", "first": "givenName", "last": "familyName",
                            "user": "username", "mail": "email"},
                "recordUID": "<employeeNumber>",
                "toleratedErrors": 100,
            },
        }))
        .unwrap();
        let long = "x".repeat(10_000);
        let rows: Vec<(&str, &str, &str, &str)> = vec![
            ("Ann", "Ok", "annok", "ann@example.org"),
            ("Bob", "X", "admin)(uid=*", "b@example.org"),
            ("Eve\u{1b}[31m", "Y", "evey", "e@example.org"),
            ("Dan", "Z", "a,b", "d@example.org"),
            ("Fay", "Q", "fayq", "f\r\n@example.org"),
            ("Gil", "R", "root", "g@example.org"),
            ("Hal", &long, "halr", "h@example.org"),
            (
                "Ida",
                "S",
                "idas-with-a-name-longer-than-32-chars",
                "i@example.org",
            ),
        ];
        let rows: Vec<Row> = rows
            .into_iter()
            .enumerate()
            .map(|(i, (first, last, user, mail))| Row {
                number: i + 2,
                fields: [
                    ("id", (i + 1).to_string()),
                    ("first", first.into()),
                    ("last", last.into()),
                    ("user", user.into()),
                    ("mail", mail.into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            })
            .collect();
        let now = jiff::Timestamp::from_second(1_900_000_000).unwrap();
        let o = run(
            &source,
            &Key::new("physics", "hr"),
            &rows,
            &[],
            &Site::default(),
            &Observed::default(),
            &config,
            now,
        );
        assert_eq!(o.aborted, None);
        let mut strict = source.clone();
        strict.spec.tolerated_errors = None;
        let aborted = run(
            &strict,
            &Key::new("physics", "hr"),
            &rows,
            &[],
            &Site::default(),
            &Observed::default(),
            &config,
            now,
        );
        assert!(
            aborted
                .aborted
                .as_deref()
                .is_some_and(|a| a.starts_with("7 bad row(s)")),
            "{:?}",
            aborted.aborted
        );
        assert!(aborted.accounts.is_empty() && aborted.people.is_empty());
        assert_eq!(
            o.accounts
                .values()
                .map(|a| a.spec.username.as_str())
                .collect::<Vec<_>>(),
            ["annok"]
        );
        assert_eq!(o.people.len(), 1);
        let errors: Vec<(usize, &str)> = o
            .errors
            .iter()
            .map(|e| (e.row, e.message.as_str()))
            .collect();
        let expect = [
            (
                3,
                "Person physics/admin)(uid=*: metadata.name: Invalid value: \"admin)(uid=*\"",
            ),
            (
                4,
                "Person physics/evey: spec.givenName: Invalid value: \"Eve\\x1b[31m\"",
            ),
            (
                5,
                "Person physics/a,b: metadata.name: Invalid value: \"a,b\"",
            ),
            (
                6,
                "Person physics/fayq: spec.email: Invalid value: \"f\\r\\n@example.org\"",
            ),
            (
                7,
                "Account physics/root: spec.username: Invalid value: \"string\": username is reserved",
            ),
            (
                8,
                "Person physics/halr: spec.familyName: Too long: may not be more than 128 bytes",
            ),
            (
                9,
                "Account physics/idas-with-a-name-longer-than-32-chars: spec.username: Too long",
            ),
        ];
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for ((row, message), (want_row, want)) in errors.iter().zip(expect) {
            assert_eq!(*row, want_row, "{message}");
            assert!(message.starts_with(want), "row {row}: {message}");
        }
    }

    fn entry(attrs: &[(&str, &str)]) -> Entry {
        let mut e = Entry {
            dn: String::new(),
            ..Default::default()
        };
        for (k, v) in attrs {
            e.attrs
                .entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.to_string());
        }
        e
    }

    fn hr(email_scheme: &str) -> ImportSource {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "roster.io/v1alpha1",
            "kind": "ImportSource",
            "metadata": {"name": "hr", "namespace": "physics"},
            "spec": {
                "sourceUID": "hr",
                "reader": {"type": "Csv", "csv": {"path": "x.csv"}},
                "mapping": {"id": "employeeNumber", "first": "givenName", "last": "familyName"},
                "recordUID": "<employeeNumber>",
                "usernameScheme": {"template": "<:umlauts,lower><firstname>[0]<lastname:alpha>[COUNTER2]", "maxLength": 12},
                "emailScheme": email_scheme,
                "toleratedErrors": 10,
            },
        }))
        .unwrap()
    }

    fn rows(people: &[(&str, &str, &str)]) -> Vec<Row> {
        people
            .iter()
            .enumerate()
            .map(|(i, (id, first, last))| Row {
                number: i + 2,
                fields: [("id", *id), ("first", *first), ("last", *last)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect()
    }

    fn config() -> Config {
        Config::parse(
            "managerId: t\nldap: {uri: 'ldap://127.0.0.1:1', bindDN: cn=a, bindPasswordFile: pw, baseDN: dc=t}\nuidRange: {min: 20000, max: 29999}\ngidRange: {min: 20000, max: 29999}\n",
            std::path::PathBuf::from("/"),
        )
        .unwrap()
    }

    /// Two people called Maria Schmidt, one already in the directory with the bare address (an
    /// account of this source) and one address held by an account Roster does not manage;
    /// compound surnames; a bad row. With a counter every address is unique and the one the
    /// directory's Maria has stays hers; without one, the second Maria is imported without an
    /// address and the summary says so (a warning, apart from the skipped row's error).
    #[test]
    fn generated_addresses_are_never_shared_and_the_summary_tells_rows_apart() {
        let export = rows(&[
            ("1", "Maria", "Schmidt"),
            ("2", "Maria", "Schmidt"),
            ("3", "Jan", "van der Berg"),
            ("4", "Seán", "Ó Briain"),
            ("5", "", "Nobody"),
            ("6", "Anna", "Weber"),
        ]);
        let mut observed = Observed::default();
        observed.file(entry(&[
            ("objectClass", "posixAccount"),
            ("objectClass", "rosterManaged"),
            ("uid", "mschmidt"),
            ("mail", "Maria.Schmidt@example.org"),
            ("rosterOwner", "t/physics/Account/mschmidt"),
            ("rosterSourceUID", "hr"),
            ("rosterRecordUID", "1"),
        ]));
        observed.file(entry(&[
            ("objectClass", "posixAccount"),
            ("uid", "aweber"),
            ("mail", "anna.weber@example.org"),
        ]));
        observed.file(entry(&[
            ("objectClass", "rosterCounter"),
            ("cn", "mail:maria.schmidt@example.org"),
            ("rosterCounterValue", "2"),
        ]));
        let run_with = |scheme: &str| {
            run(
                &hr(scheme),
                &Key::new("physics", "hr"),
                &export,
                &[],
                &Site::default(),
                &observed,
                &config(),
                jiff::Timestamp::from_second(1_900_000_000).unwrap(),
            )
        };
        let mail = |o: &Outcome, user: &str| {
            let a = o
                .accounts
                .values()
                .find(|a| a.spec.username == user)
                .unwrap();
            o.people[&Key::new("physics", &a.spec.person)]
                .spec
                .email
                .clone()
        };

        let counted = run_with(
            "<firstname:umlauts,alpha,lower>.<lastname:umlauts,alpha,lower>[COUNTER2]@example.org",
        );
        assert_eq!(counted.aborted, None);
        assert_eq!(
            mail(&counted, "mschmidt").as_deref(),
            Some("Maria.Schmidt@example.org")
        );
        assert_eq!(
            mail(&counted, "mschmidt2").as_deref(),
            Some("maria.schmidt2@example.org")
        );
        assert_eq!(
            mail(&counted, "jvanderberg").as_deref(),
            Some("jan.vanderberg@example.org")
        );
        assert_eq!(
            mail(&counted, "sobriain").as_deref(),
            Some("sean.obriain@example.org")
        );
        assert_eq!(
            mail(&counted, "aweber2").as_deref(),
            Some("anna.weber2@example.org")
        );
        // The counters go to the directory with the accounts (a username's and an address's).
        assert_eq!(
            counted.counters.get("mschmidt2"),
            Some(&vec![
                ("username:mschmidt".to_string(), 3),
                ("mail:maria.schmidt@example.org".to_string(), 3),
            ])
        );
        assert_eq!(
            counters_to_store(&counted.counters, &observed, |u| u == "mschmidt2"),
            [
                ("mail:maria.schmidt@example.org".to_string(), 3),
                ("username:mschmidt".to_string(), 3),
            ]
        );
        assert_eq!((counted.run.errors, counted.run.warnings), (1, 0));

        let bare =
            run_with("<firstname:umlauts,alpha,lower>.<lastname:umlauts,alpha,lower>@example.org");
        assert_eq!(
            mail(&bare, "mschmidt").as_deref(),
            Some("Maria.Schmidt@example.org")
        );
        assert_eq!(mail(&bare, "mschmidt2"), None);
        assert_eq!(mail(&bare, "aweber2"), None);
        assert_eq!((bare.run.errors, bare.run.warnings), (1, 2));
        let csv = summary_csv([("physics/hr", bare.rows.as_slice())], &|u| u == "mschmidt");
        let lines: Vec<&str> = csv.split_terminator("\r\n").collect();
        assert_eq!(
            lines,
            [
                SUMMARY_HEADER,
                "physics/hr,2,1,changed,mschmidt,",
                "physics/hr,3,2,new,mschmidt2,email: e-mail address `maria.schmidt@example.org` is taken by row 2 (mschmidt) and the scheme has no counter (add [COUNTER2] before the '@'); imported without an e-mail address",
                "physics/hr,4,3,new,jvanderberg,",
                "physics/hr,5,4,new,sobriain,",
                "physics/hr,6,5,skipped,,givenName is empty",
                "physics/hr,7,6,new,aweber2,email: e-mail address `anna.weber@example.org` is taken by account aweber and the scheme has no counter (add [COUNTER2] before the '@'); imported without an e-mail address",
            ]
        );
    }

    /// A summary cell a spreadsheet would run as a formula is defused; quotes are doubled.
    #[test]
    fn summary_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
    }
}
