//! Notices for people and project leaders (Karaage's reminders): an Account's person is told
//! before the account's `validUntil` and when a deactivation takes effect (expiry, a lock, a
//! removal); a Project's leaders before the project's `validUntil` and when it is blocked
//! (expired or locked). Each notice goes out once per transition: what was sent is recorded on
//! the entry in the directory (`rosterNoticeSent`), which both modes read, so neither a restart
//! nor the other mode mails it again; a new validity or a new deactivation is a new transition.
//!
//! Pure: [`due`] says what is due and which records are stale, the caller mails and records
//! ([`crate::converge::send_notices`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{parse_valid_until, valid_until_text};
use crate::config::{Config, NoticesConfig};
use crate::plan::{Kind, Observed, Plan, Target};
use crate::site::{Key, Site};

/// The attribute that records the notices sent for an entry.
pub const SENT_ATTR: &str = "rosterNoticeSent";

pub use crate::config::NOTICE_PLACEHOLDERS as PLACEHOLDERS;

/// One notice due: who gets it, what it says, and what records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The object it is about.
    pub target: Target,
    /// `accountExpiring`, `accountDeactivated`, `projectExpiring`, `projectDeactivated`.
    pub kind: &'static str,
    /// The entry the record goes on.
    pub dn: String,
    /// The record (`rosterNoticeSent` value): `expiring 2027-06-30`, `deactivated …`.
    pub mark: String,
    /// One mail per recipient: (address, subject, body).
    pub mails: Vec<(String, String, String)>,
}

/// What [`due`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub notices: Vec<Notice>,
    /// Records of transitions that are over (an extended validity, an account active again):
    /// (dn, value) to remove, so the next such transition is told again.
    pub stale: Vec<(String, String)>,
    /// Notices nobody can be sent (no e-mail address): (object, why), for the report.
    pub unreachable: Vec<(Target, String)>,
}

/// The notices due now for the declared site, against the directory as the pass left it and
/// the plan's statuses (their `Deactivated` reasons). Only Roster's own entries of declared
/// objects are considered; guests' accounts are told by the guest notice instead.
pub fn due(
    config: &Config,
    site: &Site,
    directory: &Observed,
    last: &Plan,
    now: jiff::Timestamp,
) -> Due {
    let mut out = Due::default();
    let Some(n) = &config.notices else {
        return out;
    };
    let before = n.before.signed();
    let reasons: BTreeMap<&Target, &str> = last
        .objects
        .iter()
        .filter_map(|o| {
            let c = o
                .conditions
                .iter()
                .find(|c| c.type_ == "Deactivated" && c.status)?;
            Some((&o.target, c.message.as_str()))
        })
        .collect();
    // (namespace, username) → the account's Person, for the leaders of projects.
    let people: BTreeMap<(&str, &str), &crate::api::Person> = site
        .accounts
        .iter()
        .filter_map(|(k, a)| {
            let p = site.people.get(&Key::new(&k.namespace, &a.spec.person))?;
            Some(((k.namespace.as_str(), a.spec.username.as_str()), p))
        })
        .collect();
    // The entry is this object's own (a name another namespace holds is its business).
    let owns = |e: &crate::plan::Entry, kind: &str, key: &Key| {
        e.is_managed_by(&config.manager_id)
            && e.owned_by().is_some_and(|o| {
                o.kind == kind && o.namespace == key.namespace && o.name == key.name
            })
    };
    for (key, account) in &site.accounts {
        let guest = account
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(crate::guest::GUEST_LABEL));
        let Some(entry) = directory.accounts.get(&account.spec.username) else {
            continue;
        };
        if guest || !owns(entry, "Account", key) || entry.is_gone() {
            continue;
        }
        let target = Target::new(Kind::Account, key);
        let person = site
            .people
            .get(&Key::new(&key.namespace, &account.spec.person));
        let name = person
            .map(|p| p.spec.display())
            .unwrap_or_else(|| account.spec.username.clone());
        let to: Vec<String> = person
            .and_then(|p| p.spec.email.clone())
            .or_else(|| entry.first("mail").map(str::to_string))
            .into_iter()
            .collect();
        // The account ends with its own validity or its person's, whichever comes first.
        let valid = [
            account.spec.valid_until.as_deref(),
            person.and_then(|p| p.spec.valid_until.as_deref()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|v| parse_valid_until(v).ok())
        .min();
        let mut wanted = None;
        if entry.is_deactivated() {
            // A deactivation older than the notice period is history (notices turned on late,
            // a long outage): not mailed, though its record (if any) stays while it lasts.
            if let Some(at) = entry
                .first("rosterDeactivatedAt")
                .and_then(crate::plan::parse_generalized_time)
            {
                let reason = reasons.get(&target).copied().unwrap_or("deactivated");
                wanted = Some((
                    "accountDeactivated",
                    format!("deactivated {at}"),
                    reason.to_string(),
                    valid,
                    at + before > now,
                ));
            }
        } else if let Some(v) = valid.filter(|v| *v - before <= now && now < *v) {
            wanted = Some((
                "accountExpiring",
                format!("expiring {}", valid_until_text(v)),
                String::new(),
                Some(v),
                true,
            ));
        }
        let vars = |reason: &str, valid: Option<jiff::Timestamp>| {
            BTreeMap::from([
                ("name", name.clone()),
                ("username", account.spec.username.clone()),
                ("project", String::new()),
                (
                    "validUntil",
                    valid.map(valid_until_text).unwrap_or_default(),
                ),
                ("reason", reason.to_string()),
            ])
        };
        push(&mut out, n, entry, target, wanted, |reason, valid| {
            to.iter()
                .map(|a| (a.clone(), vars(reason, valid)))
                .collect()
        });
    }
    for (key, project) in &site.projects {
        let group = crate::plan::group_name(project);
        let Some(entry) = directory.groups.get(&group) else {
            continue;
        };
        if !owns(entry, "Project", key) || entry.is_gone() {
            continue;
        }
        let target = Target::new(Kind::Project, key);
        let valid = project
            .spec
            .valid_until
            .as_deref()
            .and_then(|v| parse_valid_until(v).ok());
        let expired = valid.is_some_and(|v| v <= now);
        let wanted = if project.spec.locked {
            Some((
                "projectDeactivated",
                "deactivated locked".to_string(),
                "it is locked".to_string(),
                valid,
                true,
            ))
        } else if let Some(v) = valid.filter(|_| expired) {
            // An end long past is history, as for accounts.
            Some((
                "projectDeactivated",
                format!("deactivated expired {}", valid_until_text(v)),
                format!("it ended on {}", valid_until_text(v)),
                Some(v),
                v + before > now,
            ))
        } else {
            valid.filter(|v| *v - before <= now).map(|v| {
                (
                    "projectExpiring",
                    format!("expiring {}", valid_until_text(v)),
                    String::new(),
                    Some(v),
                    true,
                )
            })
        };
        let leaders: Vec<(String, String)> = project
            .spec
            .leaders
            .iter()
            .filter_map(|u| {
                let p = people.get(&(key.namespace.as_str(), u.as_str()))?;
                Some((p.spec.email.clone()?, p.spec.display()))
            })
            .collect();
        push(&mut out, n, entry, target, wanted, |reason, valid| {
            leaders
                .iter()
                .map(|(address, name)| {
                    (
                        address.clone(),
                        BTreeMap::from([
                            ("name", name.clone()),
                            ("username", String::new()),
                            ("project", key.name.clone()),
                            (
                                "validUntil",
                                valid.map(valid_until_text).unwrap_or_default(),
                            ),
                            ("reason", reason.to_string()),
                        ]),
                    )
                })
                .collect()
        });
    }
    out
}

/// The transition an object is in: (kind, its record, reason, validity, whether it is still
/// to be told — false for history, whose record stays but which is never mailed).
type Wanted = Option<(&'static str, String, String, Option<jiff::Timestamp>, bool)>;

/// Files one object's notice (when not recorded yet) and its stale records.
fn push(
    out: &mut Due,
    n: &NoticesConfig,
    entry: &crate::plan::Entry,
    target: Target,
    wanted: Wanted,
    recipients: impl Fn(&str, Option<jiff::Timestamp>) -> Vec<(String, BTreeMap<&'static str, String>)>,
) {
    let sent: BTreeSet<&str> = entry.values(SENT_ATTR).iter().map(String::as_str).collect();
    let keep = wanted.as_ref().map(|w| w.1.as_str());
    for s in &sent {
        // A record of the transition in force stays; the rest are over.
        if Some(*s) != keep {
            out.stale.push((entry.dn.clone(), s.to_string()));
        }
    }
    let Some((kind, mark, reason, valid, tell)) = wanted else {
        return;
    };
    if !tell || sent.contains(mark.as_str()) {
        return;
    }
    let template = n.templates.get(kind);
    let mails: Vec<(String, String, String)> = recipients(&reason, valid)
        .into_iter()
        .map(|(to, vars)| {
            (
                to,
                render(&template.subject, &vars),
                render(&template.body, &vars),
            )
        })
        .collect();
    if mails.is_empty() {
        out.unreachable.push((
            target,
            format!("{kind}: nobody to mail (no e-mail address)"),
        ));
        return;
    }
    out.notices.push(Notice {
        target,
        kind,
        dn: entry.dn.clone(),
        mark,
        mails,
    });
}

/// `{placeholder}` replaced by its value; anything else is copied (`{{` is a literal `{`).
pub fn render(template: &str, vars: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("{{") {
            out.push('{');
            rest = r;
            continue;
        }
        match rest.find('}').map(|j| (&rest[1..j], j)) {
            Some((name, j)) if vars.contains_key(name) => {
                out.push_str(&vars[name]);
                rest = &rest[j + 1..];
            }
            _ => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Account, AccountSpec, Person, PersonSpec, Project, ProjectSpec};
    use crate::config::NoticeTemplate;
    use crate::plan::{Policy, plan, simulate::simulate};

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!(
                "managerId: dev\nldap: {{uri: 'ldap://127.0.0.1:1', bindDN: cn=a, bindPasswordFile: pw, baseDN: dc=test}}\nuidRange: {{min: 20000, max: 29999}}\ngidRange: {{min: 20000, max: 29999}}\n{extra}"
            ),
            "/".into(),
        )
        .unwrap()
    }

    fn meta(name: &str) -> kube::api::ObjectMeta {
        kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("physics".into()),
            ..Default::default()
        }
    }

    fn site(locked: bool) -> Site {
        let mut site = Site::default();
        for (name, email) in [("ada", Some("ada@x.org")), ("bob", None)] {
            let mut p = Person::new(
                name,
                PersonSpec {
                    given_name: "A".into(),
                    family_name: name.to_uppercase(),
                    email: email.map(str::to_string),
                    ..Default::default()
                },
            );
            p.metadata = meta(name);
            site.people.insert(Key::new("physics", name), p);
            let mut a = Account::new(
                name,
                AccountSpec {
                    person: name.into(),
                    username: name.into(),
                    valid_until: Some("2030-06-30".into()),
                    locked: locked && name == "ada",
                    ..Default::default()
                },
            );
            a.metadata = meta(name);
            site.accounts.insert(Key::new("physics", name), a);
        }
        let mut lab = Project::new(
            "lab",
            ProjectSpec {
                leaders: vec!["ada".into()],
                valid_until: Some("2030-07-31".into()),
                ..Default::default()
            },
        );
        lab.metadata = meta("lab");
        site.projects.insert(Key::new("physics", "lab"), lab);
        site
    }

    /// The directory a pass at `now` leaves, and its plan.
    fn pass(c: &Config, site: &Site, before: &Observed, now: &str) -> (Observed, Plan) {
        let now: jiff::Timestamp = now.parse().unwrap();
        let p = plan(site, before, now, &Policy::new(c));
        let after = simulate(before, &p, c.uid_range, c.gid_range);
        let last = plan(site, &after, now, &Policy::new(c));
        (after, last)
    }

    fn kinds(d: &Due) -> Vec<(String, &'static str, String)> {
        d.notices
            .iter()
            .map(|n| (n.target.key.name.clone(), n.kind, n.mark.clone()))
            .collect()
    }

    /// Records what `due` found as sent, as the caller does once the mails are accepted.
    fn record(dir: &mut Observed, d: &Due) {
        for n in &d.notices {
            let mut e = dir.at(&n.dn).unwrap().clone();
            e.attrs
                .entry(SENT_ATTR.to_ascii_lowercase())
                .or_default()
                .push(n.mark.clone());
            dir.refile(e);
        }
        for (dn, v) in &d.stale {
            let mut e = dir.at(dn).unwrap().clone();
            e.attrs
                .get_mut(&SENT_ATTR.to_ascii_lowercase())
                .unwrap()
                .retain(|x| x != v);
            dir.refile(e);
        }
    }

    #[test]
    fn each_transition_is_told_once_and_a_new_one_again() {
        let c = config("notices: {before: 14d, smtp: {host: relay, from: roster@x.org}}\n");
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        let (mut dir, last) = pass(
            &c,
            &site(false),
            &Observed::default(),
            "2030-06-01T00:00:00Z",
        );
        assert!(
            due(&c, &site(false), &dir, &last, at("2030-06-01T00:00:00Z"))
                .notices
                .is_empty()
        );
        // Within 14 days of the account's end: ada is told; bob has no address (reported).
        let d = due(&c, &site(false), &dir, &last, at("2030-06-17T00:00:00Z"));
        assert_eq!(
            kinds(&d),
            [(
                "ada".into(),
                "accountExpiring",
                "expiring 2030-06-30".into()
            )]
        );
        assert_eq!(d.unreachable.len(), 1, "{:?}", d.unreachable);
        assert_eq!(d.notices[0].mails[0].0, "ada@x.org");
        assert_eq!(
            d.notices[0].mails[0].1,
            "Your account ada expires on 2030-06-30"
        );
        assert!(
            d.notices[0].mails[0].2.starts_with("Dear A ADA,"),
            "{}",
            d.notices[0].mails[0].2
        );
        record(&mut dir, &d);
        assert!(
            due(&c, &site(false), &dir, &last, at("2030-06-18T00:00:00Z"))
                .notices
                .is_empty()
        );
        // Locked: the deactivation is a transition of its own; the expiry record is over.
        let (mut dir, last) = pass(&c, &site(true), &dir, "2030-06-19T00:00:00Z");
        let d = due(&c, &site(true), &dir, &last, at("2030-06-19T00:00:00Z"));
        assert_eq!(d.notices.len(), 1);
        assert_eq!(d.notices[0].kind, "accountDeactivated");
        assert!(
            d.notices[0].mark.starts_with("deactivated 2030-06-19"),
            "{}",
            d.notices[0].mark
        );
        assert!(
            d.notices[0].mails[0].2.contains("locked"),
            "{}",
            d.notices[0].mails[0].2
        );
        assert_eq!(d.stale.len(), 1);
        record(&mut dir, &d);
        assert!(
            due(&c, &site(true), &dir, &last, at("2030-06-20T00:00:00Z"))
                .notices
                .is_empty()
        );
        // The project's end: its leader is told, before and when it ends.
        let d = due(&c, &site(true), &dir, &last, at("2030-07-20T00:00:00Z"));
        assert_eq!(
            kinds(&d),
            [(
                "lab".into(),
                "projectExpiring",
                "expiring 2030-07-31".into()
            )]
        );
        record(&mut dir, &d);
        let d = due(&c, &site(true), &dir, &last, at("2030-08-01T00:00:00Z"));
        assert_eq!(
            kinds(&d),
            [(
                "lab".into(),
                "projectDeactivated",
                "deactivated expired 2030-07-31".into()
            )]
        );
        // A deactivation older than the notice period is history: never mailed, and its
        // record stays while it lasts (nothing written when nothing changed).
        let d = due(&c, &site(true), &dir, &last, at("2030-09-01T00:00:00Z"));
        assert!(
            d.notices.iter().all(|n| n.kind != "accountDeactivated"),
            "{:?}",
            kinds(&d)
        );
        assert!(
            d.stale.iter().all(|(dn, _)| !dn.starts_with("uid=ada")),
            "{:?}",
            d.stale
        );
    }

    #[test]
    fn without_notices_configured_nothing_is_due() {
        let c = config("");
        let (dir, last) = pass(
            &c,
            &site(false),
            &Observed::default(),
            "2030-06-01T00:00:00Z",
        );
        let d = due(
            &c,
            &site(false),
            &dir,
            &last,
            "2030-06-29T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(d, Due::default());
    }

    #[test]
    fn templates_fill_their_placeholders_and_unknown_ones_are_named() {
        let vars = BTreeMap::from([
            ("name", "Ada".to_string()),
            ("validUntil", "2030-06-30".to_string()),
        ]);
        assert_eq!(
            render("Dear {name}, until {validUntil}. {{x}} {other}", &vars),
            "Dear Ada, until 2030-06-30. {x}} {other}"
        );
        let t = NoticeTemplate {
            subject: "{name} {usr}".into(),
            body: "{{literal}} {reason} {projekt}".into(),
        };
        assert_eq!(t.unknown_placeholders(), ["usr", "projekt"]);
        let c = Config::parse(
            "managerId: dev\nldap: {uri: 'ldap://127.0.0.1:1', bindDN: cn=a, bindPasswordFile: pw, baseDN: dc=test}\nuidRange: {min: 20000, max: 29999}\ngidRange: {min: 20000, max: 29999}\nnotices:\n  templates:\n    accountExpiring: {subject: 'Hi {nme}', body: 'x'}\n",
            "/".into(),
        );
        let e = c.unwrap_err().to_string();
        assert!(
            e.contains("notices.templates.accountExpiring: unknown placeholder(s) {nme}"),
            "{e}"
        );
        assert!(e.contains("notices.smtp: no relay"), "{e}");
    }
}
