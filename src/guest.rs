//! Guests (DESIGN.md §2): a Guest stands for a Person and an Account that Roster derives from
//! it, with the account's dates following the guest policy (logins until `validUntil` + login
//! grace, purge at `validUntil` + purge delay). The rules no CEL can check — the host is an
//! active Person, no sponsorship cycles, the 12-month extension limit, the admin group exists —
//! are checked here, each an `Invalid` condition with a precise message. Pure: both modes call
//! it with what they know and apply the result their own way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::api::{
    Account, AccountSpec, DeletionPolicy, Guest, GuestType, Person, PersonSpec, Project,
    parse_duration, parse_valid_until,
};
use crate::config::{Config, Period};
use crate::plan::Cond;
use crate::site::{Key, Site};

/// The label on the Person and Account a Guest stands for (operator mode: also an
/// ownerReference).
pub const GUEST_LABEL: &str = "roster.io/guest";

/// What became of one Guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `Invalid` (blocking: nothing derived), `HostGone`, `Expiring`, `Superseded` …
    pub conditions: Vec<Cond>,
    /// Nothing could be derived (a rule is broken and nothing was accepted before).
    pub invalid: bool,
    /// The validity now in force (the declared one, or the last accepted one when a new one
    /// breaks the 12-month rule). `None`: unlimited (Technical) or nothing accepted.
    pub accepted_valid_until: Option<String>,
    /// Who answers for the guest: `Person <host>` or `Project <adminGroup>` (its leaders).
    pub acting_sponsor: Option<String>,
    /// Where the ahead-of-expiry notice goes (e-mail addresses), when it is due now.
    pub notify: Option<Vec<String>>,
    /// Whether the expiry notice is due (within `guests.notice` before `validUntil`).
    pub expiring: bool,
    /// The account was purged by the guest policy (now ≥ validUntil + purge delay).
    pub purged: bool,
    /// The next time something changes for this guest by the clock alone.
    pub next_wakeup: Option<jiff::Timestamp>,
    /// The derived objects' keys (the Guest's own name).
    pub person: Option<Key>,
    pub account: Option<Key>,
}

/// The Persons and Accounts the Guests stand for, and what the planner must treat as removed.
#[derive(Clone, Debug, Default)]
pub struct Expansion {
    pub people: BTreeMap<Key, Person>,
    pub accounts: BTreeMap<Key, Account>,
    /// Accounts removed by guest policy (purge due) or by the Guest's deletion.
    pub removed: BTreeMap<Key, DeletionPolicy>,
    /// Their purge delay.
    pub purge_after: BTreeMap<Key, Duration>,
    pub outcomes: BTreeMap<Key, Outcome>,
}

impl Expansion {
    /// Adds the derived objects to the site and the removals to a policy's maps.
    pub fn merge_into(
        &self,
        site: &mut Site,
        removed: &mut BTreeMap<Key, DeletionPolicy>,
        purge_after: &mut BTreeMap<Key, Duration>,
    ) {
        site.people
            .extend(self.people.iter().map(|(k, v)| (k.clone(), v.clone())));
        site.accounts
            .extend(self.accounts.iter().map(|(k, v)| (k.clone(), v.clone())));
        removed.extend(self.removed.iter().map(|(k, v)| (k.clone(), *v)));
        purge_after.extend(self.purge_after.iter().map(|(k, v)| (k.clone(), *v)));
    }

    /// Guests whose account an import now declares (the same person came through an import):
    /// they end (`Superseded`) and derive nothing more; the account follows the import.
    pub fn supersede(
        &mut self,
        guests: &BTreeMap<Key, Guest>,
        imported: &BTreeSet<(String, String)>,
    ) {
        for (key, g) in guests {
            let username = &g.spec.account.username;
            if !imported.contains(&(key.namespace.clone(), username.clone())) {
                continue;
            }
            self.people.remove(key);
            self.accounts.remove(key);
            self.removed.remove(key);
            self.purge_after.remove(key);
            let o = self.outcomes.entry(key.clone()).or_default();
            *o = Outcome {
                conditions: vec![cond(
                    "Superseded",
                    "Imported",
                    format!(
                        "the same person came through an import; the account {username} follows the import from now on"
                    ),
                )],
                ..Default::default()
            };
        }
    }

    /// The earliest wake-up of all guests.
    pub fn next_wakeup(&self) -> Option<jiff::Timestamp> {
        self.outcomes.values().filter_map(|o| o.next_wakeup).min()
    }
}

fn cond(type_: &'static str, reason: &str, message: String) -> Cond {
    Cond {
        type_,
        status: true,
        reason: reason.into(),
        message,
    }
}

/// A duration as the shortest exact text `parse_duration` reads back.
fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else {
        format!("{s}s")
    }
}

fn add(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    t.checked_add(jiff::SignedDuration::from_secs(d.as_secs() as i64))
        .unwrap_or(t)
}

/// Twelve calendar months after `t` (UTC).
fn twelve_months_after(t: jiff::Timestamp) -> jiff::Timestamp {
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .checked_add(jiff::Span::new().months(12))
        .map(|z| z.timestamp())
        .unwrap_or(t)
}

/// Whether a declared Person is active now (not locked, not expired).
fn person_active(p: &Person, now: jiff::Timestamp) -> bool {
    !p.spec.locked
        && p.spec
            .valid_until
            .as_deref()
            .and_then(|v| parse_valid_until(v).ok())
            .is_none_or(|t| t > now)
}

/// Derives the guests' Persons and Accounts.
///
/// `site` holds the declared objects *not* derived from guests. `known` lists the guests
/// established before (operator: a status exists; file mode: the account is in the directory),
/// with the validity accepted last when it is known. `deleting` are Guests being deleted.
pub fn expand(
    guests: &BTreeMap<Key, Guest>,
    site: &Site,
    config: &Config,
    now: jiff::Timestamp,
    known: &BTreeMap<Key, Option<jiff::Timestamp>>,
    deleting: &BTreeSet<Key>,
) -> Expansion {
    let mut out = Expansion::default();
    let cfg = &config.guests;
    let cycles = cycles(guests);
    let notice = cfg.notice.get();
    for (key, g) in guests {
        let mut o = Outcome::default();
        let spec = &g.spec;
        let mut broken: Vec<(&'static str, String)> = vec![];
        let project = |name: &str| site.projects.get(&Key::new(&key.namespace, name));
        if spec.type_ == GuestType::Personal && spec.valid_until.is_none() {
            broken.push((
                "ValidUntilRequired",
                "spec.validUntil: a Personal guest needs validUntil".into(),
            ));
        }
        let admin: Option<&Project> = match &spec.admin_group {
            Some(name) => match project(name) {
                Some(p) => Some(p),
                None => {
                    broken.push((
                        "AdminGroupMissing",
                        format!(
                            "spec.adminGroup: no Project {name:?} in namespace {}",
                            key.namespace
                        ),
                    ));
                    None
                }
            },
            None if spec.type_ == GuestType::Technical => {
                broken.push((
                    "AdminGroupRequired",
                    "spec.adminGroup: a Technical guest needs an adminGroup".into(),
                ));
                None
            }
            None => None,
        };
        if let Some(path) = cycles.get(key) {
            broken.push((
                "SponsorshipCycle",
                format!("spec.host: sponsorship cycle {path}"),
            ));
        }
        let person_key = key.clone();
        if let Some(p) = site.people.get(&person_key) {
            let owner = p.metadata.labels.as_ref().and_then(|l| l.get(GUEST_LABEL));
            if owner.map(String::as_str) != key.name.as_str().into() {
                broken.push((
                    "NameTaken",
                    format!(
                        "a Person {key} already exists; a guest's Person takes the Guest's name"
                    ),
                ));
            }
        }
        if let Some(a) = site.accounts.get(key) {
            let owner = a.metadata.labels.as_ref().and_then(|l| l.get(GUEST_LABEL));
            if owner.map(String::as_str) != key.name.as_str().into() {
                broken.push((
                    "NameTaken",
                    format!(
                        "an Account {key} already exists; a guest's Account takes the Guest's name"
                    ),
                ));
            }
        }
        // The host: a declared, active Person (another guest's Person counts while that guest
        // is in force).
        let host_key = Key::new(&key.namespace, &spec.host);
        let host_active = match site.people.get(&host_key) {
            Some(p) => person_active(p, now),
            None => {
                guests.get(&host_key).is_some_and(|h| {
                    h.spec
                        .valid_until
                        .as_deref()
                        .and_then(|v| parse_valid_until(v).ok())
                        .is_none_or(|t| t > now)
                }) && !cycles.contains_key(&host_key)
            }
        };
        let established = known.contains_key(key);
        if !host_active && !established && !cycles.contains_key(key) {
            broken.push((
                "HostNotActive",
                format!(
                    "spec.host: {:?} is not an active Person in namespace {}",
                    spec.host, key.namespace
                ),
            ));
        }
        // The validity: the declared one if it keeps to the 12-month rule, else what was
        // accepted before.
        let previous = known.get(key).copied().flatten();
        let declared = match spec.valid_until.as_deref().map(parse_valid_until) {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                broken.push(("BadValidUntil", format!("spec.validUntil: {e}")));
                None
            }
            None => None,
        };
        let mut valid = declared;
        if let Some(t) = declared {
            let base = previous.map_or(now, |p| p.max(now));
            let limit = twelve_months_after(base);
            if t > limit {
                let m = format!(
                    "spec.validUntil {} is more than 12 months after {base} (the later of now and the validity accepted last); at most {limit}",
                    spec.valid_until.as_deref().unwrap_or("")
                );
                match previous {
                    Some(p) => {
                        o.conditions.push(cond("Invalid", "ValidUntilTooFar", m));
                        valid = Some(p);
                    }
                    None => broken.push(("ValidUntilTooFar", m)),
                }
            }
        }
        if !broken.is_empty() {
            o.invalid = true;
            for (reason, m) in broken {
                o.conditions.push(cond("Invalid", reason, m));
            }
            out.outcomes.insert(key.clone(), o);
            continue;
        }
        // Shown as declared: `2027-06-30`, not the instant it ends at.
        o.accepted_valid_until = valid.map(crate::api::valid_until_text);
        let leaders = |p: &Project| p.spec.leaders.clone();
        o.acting_sponsor = if host_active {
            Some(format!("Person {}", spec.host))
        } else {
            let who = admin.map(|p| {
                format!(
                    "Project {} (leaders: {})",
                    spec.admin_group.as_deref().unwrap_or(""),
                    leaders(p).join(", ")
                )
            });
            o.conditions.push(cond(
                "HostGone",
                "HostNotActive",
                format!(
                    "the host {:?} is no longer an active Person; {}",
                    spec.host,
                    who.as_deref().map_or(
                        "there is no admin group: nobody answers for this guest".to_string(),
                        |w| format!("{w} act for the guest")
                    )
                ),
            ));
            who
        };
        // Dates from the policy (the guest's own within the configured bounds).
        let defaults = match spec.type_ {
            GuestType::Personal => &cfg.personal,
            GuestType::Technical => &cfg.technical,
        };
        let bound = |own: Option<&String>, default: &Period, max: &Period| {
            let (d, m) = (default.get(), max.get());
            own.and_then(|v| parse_duration(v).ok())
                .unwrap_or(d)
                .min(m.max(d))
        };
        let policy = spec.policy.clone().unwrap_or_default();
        let grace = bound(
            policy.login_grace.as_ref(),
            &defaults.login_grace,
            &cfg.max_login_grace,
        );
        let purge = bound(
            policy.purge_after.as_ref(),
            &defaults.purge_after,
            &cfg.max_purge_after,
        )
        .max(grace);
        let login_until = valid.map(|v| add(v, grace));
        let purge_at = valid.map(|v| add(v, purge));
        // The notice: due from validUntil − notice until validUntil.
        if let Some(v) = valid {
            let from = v
                .checked_sub(jiff::SignedDuration::from_secs(notice.as_secs() as i64))
                .unwrap_or(v);
            if now >= from && now < v {
                o.expiring = true;
                let days = (v.as_second() - now.as_second()).div_euclid(86_400);
                o.conditions.push(cond(
                    "Expiring",
                    "ValidUntilSoon",
                    format!("Guest {key} expires at {v} (in {days} days); extend it with `roster guest extend {} --months N`", key.name),
                ));
                let emails = |users: &[String]| -> Vec<String> {
                    users
                        .iter()
                        .filter_map(|u| {
                            site.accounts
                                .iter()
                                .find(|(k, a)| {
                                    k.namespace == key.namespace && &a.spec.username == u
                                })
                                .and_then(|(k, a)| {
                                    site.people.get(&Key::new(&k.namespace, &a.spec.person))
                                })
                                .and_then(|p| p.spec.email.clone())
                        })
                        .collect()
                };
                let to: Vec<String> = if spec.type_ == GuestType::Personal && host_active {
                    site.people
                        .get(&host_key)
                        .and_then(|p| p.spec.email.clone())
                        .into_iter()
                        .collect()
                } else {
                    admin.map(|p| emails(&leaders(p))).unwrap_or_default()
                };
                o.notify = Some(to);
            }
            o.next_wakeup = [from, v, purge_at.unwrap_or(v)]
                .into_iter()
                .filter(|t| *t > now)
                .min();
        }
        let account_key = key.clone();
        o.person = Some(person_key.clone());
        o.account = Some(account_key.clone());
        let labels =
            std::collections::BTreeMap::from([(GUEST_LABEL.to_string(), key.name.clone())]);
        let meta = || kube::api::ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        if deleting.contains(key) {
            // Deleting the Guest removes its account through the lifecycle.
            out.removed
                .insert(account_key.clone(), DeletionPolicy::Deactivate);
            out.purge_after.insert(account_key, purge);
            out.outcomes.insert(key.clone(), o);
            continue;
        }
        out.people.insert(
            person_key,
            Person {
                metadata: meta(),
                spec: PersonSpec {
                    given_name: spec.person.given_name.clone(),
                    family_name: spec.person.family_name.clone(),
                    email: spec.person.email.clone(),
                    institute: spec.person.institute.clone(),
                    ..Default::default()
                },
                status: None,
            },
        );
        if purge_at.is_some_and(|p| now >= p) {
            o.purged = true;
            out.removed
                .insert(account_key, DeletionPolicy::PurgeImmediately);
            out.outcomes.insert(key.clone(), o);
            continue;
        }
        let a = &spec.account;
        out.accounts.insert(
            account_key,
            Account {
                metadata: meta(),
                spec: AccountSpec {
                    person: key.name.clone(),
                    username: a.username.clone(),
                    login_shell: a.login_shell.clone(),
                    projects: a.projects.clone(),
                    default_project: a.default_project.clone(),
                    ssh_public_keys: a.ssh_public_keys.clone(),
                    valid_until: login_until.map(|t| t.to_string()),
                    purge_after: Some(duration_text(purge)),
                    ..Default::default()
                },
                status: None,
            },
        );
        out.outcomes.insert(key.clone(), o);
    }
    out
}

/// Guests on a sponsorship cycle (a guest's host is another guest's Person, at any depth),
/// with the cycle written out.
fn cycles(guests: &BTreeMap<Key, Guest>) -> BTreeMap<Key, String> {
    let mut out = BTreeMap::new();
    for start in guests.keys() {
        let mut path = vec![start.clone()];
        let mut at = start.clone();
        while let Some(g) = guests.get(&at) {
            let next = Key::new(&at.namespace, &g.spec.host);
            if !guests.contains_key(&next) {
                break;
            }
            if next == *start {
                let names: Vec<&str> = path
                    .iter()
                    .map(|k| k.name.as_str())
                    .chain(std::iter::once(start.name.as_str()))
                    .collect();
                out.insert(start.clone(), names.join(" → "));
                break;
            }
            if path.contains(&next) {
                break; // a cycle further on, not through `start`
            }
            path.push(next.clone());
            at = next;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GuestAccount, GuestPerson, GuestSpec, ProjectSpec};

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn guest(
        name: &str,
        host: &str,
        ty: GuestType,
        valid: Option<&str>,
        admin: Option<&str>,
    ) -> (Key, Guest) {
        let mut g = Guest::new(
            name,
            GuestSpec {
                host: host.into(),
                admin_group: admin.map(str::to_string),
                type_: ty,
                valid_until: valid.map(str::to_string),
                person: GuestPerson {
                    given_name: "G".into(),
                    family_name: name.into(),
                    ..Default::default()
                },
                account: GuestAccount {
                    username: name.into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        g.metadata.namespace = Some("physics".into());
        (Key::new("physics", name), g)
    }

    fn site() -> Site {
        let mut s = Site::default();
        let mut host = Person::new(
            "ada",
            PersonSpec {
                given_name: "Ada".into(),
                family_name: "L".into(),
                email: Some("ada@x.org".into()),
                ..Default::default()
            },
        );
        host.metadata.namespace = Some("physics".into());
        s.people.insert(Key::new("physics", "ada"), host);
        let mut lab = Project::new(
            "lab",
            ProjectSpec {
                leaders: vec!["bob".into()],
                ..Default::default()
            },
        );
        lab.metadata.namespace = Some("physics".into());
        s.projects.insert(Key::new("physics", "lab"), lab);
        s
    }

    fn run(
        guests: &[(Key, Guest)],
        site: &Site,
        now: &str,
        known: &[(&str, Option<&str>)],
    ) -> Expansion {
        let config = Config::parse(
            "managerId: dev\nldap: {uri: ldap://h, bindDN: cn=a, bindPasswordFile: pw, baseDN: dc=t}\nuidRange: {min: 20000, max: 29999}\ngidRange: {min: 20000, max: 29999}\n",
            "/".into(),
        )
        .unwrap();
        let known = known
            .iter()
            .map(|(n, v)| {
                (
                    Key::new("physics", *n),
                    v.map(parse_valid_until).map(Result::unwrap),
                )
            })
            .collect();
        expand(
            &guests.iter().cloned().collect(),
            site,
            &config,
            ts(now),
            &known,
            &BTreeSet::new(),
        )
    }

    fn reasons(e: &Expansion, name: &str) -> Vec<String> {
        e.outcomes[&Key::new("physics", name)]
            .conditions
            .iter()
            .filter(|c| c.type_ == "Invalid")
            .map(|c| c.reason.clone())
            .collect()
    }

    #[test]
    fn a_personal_guest_gets_a_person_and_an_account_with_policy_dates() {
        let e = run(
            &[guest(
                "vis",
                "ada",
                GuestType::Personal,
                Some("2030-03-31"),
                None,
            )],
            &site(),
            "2030-01-01T00:00:00Z",
            &[],
        );
        let a = &e.accounts[&Key::new("physics", "vis")];
        // validUntil 2030-03-31 (inclusive) + 30 days of login grace.
        assert_eq!(a.spec.valid_until.as_deref(), Some("2030-05-01T00:00:00Z"));
        assert_eq!(a.spec.purge_after.as_deref(), Some("60d"));
        assert_eq!(
            e.people[&Key::new("physics", "vis")].spec.family_name,
            "vis"
        );
        let o = &e.outcomes[&Key::new("physics", "vis")];
        assert_eq!(o.acting_sponsor.as_deref(), Some("Person ada"));
        assert_eq!(
            o.next_wakeup,
            Some(ts("2030-03-18T00:00:00Z")),
            "the notice, 14 days ahead"
        );
        // In the notice window: Expiring, e-mail to the host.
        let e = run(
            &[guest(
                "vis",
                "ada",
                GuestType::Personal,
                Some("2030-03-31"),
                None,
            )],
            &site(),
            "2030-03-20T00:00:00Z",
            &[],
        );
        let o = &e.outcomes[&Key::new("physics", "vis")];
        assert!(o.expiring);
        assert_eq!(o.notify, Some(vec!["ada@x.org".to_string()]));
        // At validUntil + 60 days: purged by policy.
        let e = run(
            &[guest(
                "vis",
                "ada",
                GuestType::Personal,
                Some("2030-03-31"),
                None,
            )],
            &site(),
            "2030-05-31T00:00:00Z",
            &[("vis", Some("2030-03-31"))],
        );
        assert!(e.outcomes[&Key::new("physics", "vis")].purged);
        assert!(e.accounts.is_empty());
        assert_eq!(
            e.removed[&Key::new("physics", "vis")],
            DeletionPolicy::PurgeImmediately
        );
    }

    #[test]
    fn every_rule_gives_its_own_reason() {
        let s = site();
        let now = "2030-01-01T00:00:00Z";
        let cases = [
            (
                guest("g1", "ada", GuestType::Personal, None, None),
                "ValidUntilRequired",
            ),
            (
                guest("g2", "ada", GuestType::Technical, None, None),
                "AdminGroupRequired",
            ),
            (
                guest("g3", "ada", GuestType::Technical, None, Some("nolab")),
                "AdminGroupMissing",
            ),
            (
                guest(
                    "g4",
                    "nobody",
                    GuestType::Personal,
                    Some("2030-06-01"),
                    None,
                ),
                "HostNotActive",
            ),
            (
                guest("g5", "ada", GuestType::Personal, Some("2031-02-01"), None),
                "ValidUntilTooFar",
            ),
            (
                guest("ada", "ada", GuestType::Personal, Some("2030-06-01"), None),
                "SponsorshipCycle",
            ),
        ];
        for ((k, g), reason) in cases {
            let e = run(&[(k.clone(), g)], &s, now, &[]);
            assert!(
                reasons(&e, &k.name).contains(&reason.to_string()),
                "{}: {:?}",
                k.name,
                reasons(&e, &k.name)
            );
            assert!(e.accounts.is_empty(), "{}: nothing derived", k.name);
        }
        // A technical guest with an admin group may be unlimited.
        let e = run(
            &[guest("svc", "ada", GuestType::Technical, None, Some("lab"))],
            &s,
            now,
            &[],
        );
        assert!(reasons(&e, "svc").is_empty());
        assert_eq!(
            e.accounts[&Key::new("physics", "svc")].spec.valid_until,
            None
        );
    }

    #[test]
    fn the_twelve_month_rule_counts_from_the_later_of_now_and_the_accepted_validity() {
        let s = site();
        // Accepted until 2030-06-30: up to 12 months after that is fine.
        let e = run(
            &[guest(
                "vis",
                "ada",
                GuestType::Personal,
                Some("2031-06-29"),
                None,
            )],
            &s,
            "2030-01-01T00:00:00Z",
            &[("vis", Some("2030-06-30"))],
        );
        assert!(reasons(&e, "vis").is_empty(), "{:?}", reasons(&e, "vis"));
        // Too far: refused, the accepted validity stays in force.
        let e = run(
            &[guest(
                "vis",
                "ada",
                GuestType::Personal,
                Some("2031-09-01"),
                None,
            )],
            &s,
            "2030-01-01T00:00:00Z",
            &[("vis", Some("2030-06-30"))],
        );
        assert_eq!(reasons(&e, "vis"), ["ValidUntilTooFar"]);
        assert_eq!(
            e.accounts[&Key::new("physics", "vis")]
                .spec
                .valid_until
                .as_deref(),
            Some("2030-07-31T00:00:00Z")
        );
        // After expiry the base is now.
        let e = run(
            &[guest(
                "vis",
                "ada",
                GuestType::Personal,
                Some("2031-08-01"),
                None,
            )],
            &s,
            "2030-09-01T00:00:00Z",
            &[("vis", Some("2030-06-30"))],
        );
        assert!(reasons(&e, "vis").is_empty());
    }

    #[test]
    fn cycles_of_two_and_three_are_refused_and_a_chain_is_fine() {
        let s = site();
        let now = "2030-01-01T00:00:00Z";
        let v = Some("2030-06-01");
        let two = [
            guest("a", "b", GuestType::Personal, v, None),
            guest("b", "a", GuestType::Personal, v, None),
        ];
        let e = run(&two, &s, now, &[]);
        assert_eq!(reasons(&e, "a"), ["SponsorshipCycle"]);
        assert!(
            e.outcomes[&Key::new("physics", "a")].conditions[0]
                .message
                .contains("a → b → a")
        );
        let three = [
            guest("a", "b", GuestType::Personal, v, None),
            guest("b", "c", GuestType::Personal, v, None),
            guest("c", "a", GuestType::Personal, v, None),
        ];
        let e = run(&three, &s, now, &[]);
        for n in ["a", "b", "c"] {
            assert_eq!(reasons(&e, n), ["SponsorshipCycle"], "{n}");
        }
        let chain = [
            guest("a", "b", GuestType::Personal, v, None),
            guest("b", "ada", GuestType::Personal, v, None),
        ];
        let e = run(&chain, &s, now, &[]);
        assert!(reasons(&e, "a").is_empty() && reasons(&e, "b").is_empty());
    }

    #[test]
    fn when_the_host_goes_the_admin_group_takes_over_and_the_guest_stays() {
        let mut s = site();
        s.people
            .get_mut(&Key::new("physics", "ada"))
            .unwrap()
            .spec
            .locked = true;
        let e = run(
            &[guest(
                "vis",
                "ada",
                GuestType::Personal,
                Some("2030-06-01"),
                Some("lab"),
            )],
            &s,
            "2030-01-01T00:00:00Z",
            &[("vis", Some("2030-06-01"))],
        );
        let o = &e.outcomes[&Key::new("physics", "vis")];
        assert!(!o.invalid);
        assert!(o.conditions.iter().any(|c| c.type_ == "HostGone"));
        assert_eq!(
            o.acting_sponsor.as_deref(),
            Some("Project lab (leaders: bob)")
        );
        assert!(e.accounts.contains_key(&Key::new("physics", "vis")));
        // A new guest of an inactive host is refused.
        let e = run(
            &[guest(
                "new",
                "ada",
                GuestType::Personal,
                Some("2030-06-01"),
                Some("lab"),
            )],
            &s,
            "2030-01-01T00:00:00Z",
            &[],
        );
        assert_eq!(reasons(&e, "new"), ["HostNotActive"]);
    }
}
