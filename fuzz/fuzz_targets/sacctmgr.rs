//! Slurm observation without database access: the texts `sacctmgr -nP show …` prints, read by
//! `roster::slurm::observe::parse_sacctmgr`.
//!
//! Properties besides "no panic":
//! - the result is an error exactly when a cluster asked for is not listed by sacctmgr;
//! - what it reads belongs to the clusters asked for, and no name or value it returns holds a
//!   line break or a `|` (a field can never run into the next one);
//! - a snapshot rendered as sacctmgr prints it reads back as that snapshot (with sacctmgr's own
//!   conventions: fairshare 1 is "not set", a QOS list of just `normal` is the inherited one).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use roster::slurm::observe::{ObserveError, SacctmgrShow, parse_sacctmgr};
use roster::slurm::{Account, Assoc, Limits, State};

#[derive(Arbitrary, Debug)]
struct Model {
    clusters: Vec<String>,
    /// Clusters sacctmgr lists besides those asked for.
    others: Vec<String>,
    qos: Vec<String>,
    info: Vec<(String, String, String)>,
    coordinators: Vec<(String, String)>,
    accounts: Vec<(u8, String, AccountModel)>,
    assocs: Vec<AssocModel>,
    defaults: Vec<(u8, String, String)>,
}

/// A user's association: cluster (index), account, user, partition, MaxJobs, MaxSubmit.
#[derive(Arbitrary, Debug)]
struct AssocModel(u8, String, String, String, Option<i64>, Option<i64>);

#[derive(Arbitrary, Debug)]
struct AccountModel {
    parent: String,
    fairshare: Option<i64>,
    qos: Vec<String>,
    default_qos: Option<String>,
    grp_jobs: Option<i64>,
    grp_submit: Option<i64>,
    grp_tres: Vec<(String, u32)>,
    max_wall: Option<u32>,
}

// The first byte chooses: even, the rest is text in sections separated by `%%` lines: the
// clusters asked for (comma-separated), then what `show cluster`, `show qos`, `show account`
// and `show user withcoord` print, then for each cluster `show assoc` and `show user withassoc`
// (whatever sacctmgr, or a broken installation, prints). Odd, the rest makes a [`Model`].
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        if let Ok(m) = Unstructured::new(rest).arbitrary::<Model>() {
            model(m);
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut sections = text.split("%%\n").map(str::to_string);
    let mut next = || sections.next().unwrap_or_default();
    let clusters: Vec<String> = next()
        .trim_end_matches('\n')
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut show = SacctmgrShow {
        clusters: next(),
        qos: next(),
        accounts: next(),
        coordinators: next(),
        per_cluster: vec![],
    };
    for _ in &clusters {
        show.per_cluster.push((next(), next()));
    }
    raw(&clusters, &show);
});

fn raw(clusters: &[String], show: &SacctmgrShow) {
    let listed: Vec<&str> = show.clusters.lines().map(str::trim).collect();
    let unknown = clusters.iter().find(|c| !listed.contains(&c.as_str()));
    let state = match (parse_sacctmgr(clusters, show), unknown) {
        (Err(ObserveError::UnknownCluster(c)), Some(u)) => {
            assert_eq!(&c, u);
            return;
        }
        (Ok(state), None) => state,
        (r, u) => panic!("{r:?} with unknown cluster {u:?}"),
    };
    let asked: BTreeSet<&String> = clusters.iter().collect();
    assert_eq!(state.clusters.iter().collect::<BTreeSet<_>>(), asked);
    let mut texts: Vec<&str> = vec![];
    for q in &state.qos {
        texts.push(q);
    }
    for (a, (d, o)) in &state.account_info {
        texts.extend([a.as_str(), d, o]);
    }
    for ((c, a), acct) in &state.accounts {
        assert!(asked.contains(c));
        texts.extend([a.as_str(), &acct.parent]);
        texts.extend(acct.qos.iter().map(String::as_str));
        texts.extend(acct.default_qos.as_deref());
        texts.extend(acct.limits.grp_tres.as_deref());
    }
    for (c, a, u, p) in state.assocs.keys() {
        assert!(asked.contains(c));
        assert!(!u.is_empty(), "an association without a user");
        texts.extend([a.as_str(), u, p]);
    }
    for ((c, u), a) in &state.defaults {
        assert!(asked.contains(c));
        texts.extend([u.as_str(), a]);
    }
    for (a, u) in &state.coordinators {
        assert!(!a.is_empty());
        texts.extend([a.as_str(), u]);
    }
    for t in texts {
        assert!(!t.contains(['\n', '|']), "{t:?} runs across fields");
    }
}

/// A Slurm name: the characters sacctmgr shows for accounts, users, clusters, QOS.
fn name(s: &str) -> String {
    let n: String = s
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
        .take(12)
        .collect();
    if n.is_empty() { "a".into() } else { n }
}

/// A description or organization: any text but the separators.
fn text(s: &str) -> String {
    s.replace(['|', '\n', '\r'], " ")
}

fn num(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// MaxWall as sacctmgr prints it: `[days-]hours:minutes:seconds`, or `minutes:seconds` below
/// an hour.
fn wall(m: Option<u32>) -> String {
    let Some(m) = m else {
        return String::new();
    };
    let (days, hours, minutes) = (m / 1440, m % 1440 / 60, m % 60);
    if days > 0 {
        format!("{days}-{hours:02}:{minutes:02}:00")
    } else if hours > 0 {
        format!("{hours:02}:{minutes:02}:00")
    } else {
        format!("{minutes:02}:00")
    }
}

fn model(m: Model) {
    let clusters: Vec<String> = m.clusters.iter().map(|c| name(c)).collect();
    if clusters.is_empty() {
        return;
    }
    let cluster = |i: u8| clusters[usize::from(i) % clusters.len()].clone();
    let mut expected = State {
        clusters: clusters.iter().cloned().collect(),
        ..State::default()
    };
    let mut show = SacctmgrShow::default();
    for c in m
        .others
        .iter()
        .map(|c| name(c))
        .chain(clusters.iter().cloned())
    {
        show.clusters.push_str(&format!("{c}\n"));
    }
    for q in &m.qos {
        show.qos.push_str(&format!("{}\n", name(q)));
        expected.qos.insert(name(q));
    }
    for (a, d, o) in &m.info {
        let (a, d, o) = (name(a), text(d), text(o));
        show.accounts.push_str(&format!("{a}|{d}|{o}\n"));
        expected.account_info.insert(a, (d, o));
    }
    for (a, u) in &m.coordinators {
        let (a, u) = (name(a), name(u));
        show.coordinators.push_str(&format!("{u}|{a}\n"));
        expected.coordinators.insert((a, u));
    }
    let mut assoc_lines: BTreeMap<String, String> = BTreeMap::new();
    for (i, a, acct) in &m.accounts {
        let (c, a) = (cluster(*i), name(a));
        let qos: BTreeSet<String> = acct.qos.iter().map(|q| name(q)).collect();
        let tres: Vec<String> = acct
            .grp_tres
            .iter()
            .map(|(t, v)| format!("{}={v}", name(t).replacen('.', "/", 1)))
            .collect();
        let default_qos = acct.default_qos.as_deref().map(name);
        assoc_lines.entry(c.clone()).or_default().push_str(&format!(
            "{a}|||{}|{}|||{}|{}|{}|{}|{}|{}\n",
            name(&acct.parent),
            num(acct.fairshare),
            num(acct.grp_jobs),
            num(acct.grp_submit),
            tres.join(","),
            wall(acct.max_wall),
            qos.iter().cloned().collect::<Vec<_>>().join(","),
            default_qos.clone().unwrap_or_default(),
        ));
        let mut sorted = tres.clone();
        sorted.sort();
        let account = Account {
            parent: name(&acct.parent),
            fairshare: acct.fairshare.filter(|f| *f != 1),
            qos: if qos.len() == 1 && qos.contains("normal") {
                BTreeSet::new()
            } else {
                qos
            },
            default_qos,
            limits: Limits {
                grp_jobs: acct.grp_jobs,
                grp_submit_jobs: acct.grp_submit,
                max_jobs: None,
                max_submit_jobs: None,
                grp_tres: (!sorted.is_empty()).then(|| sorted.join(",")),
                max_wall: acct.max_wall.map(i64::from),
            },
        };
        expected.accounts.insert((c, a), account);
    }
    for AssocModel(i, a, u, p, max_jobs, max_submit) in &m.assocs {
        let (c, a, u) = (cluster(*i), name(a), name(u));
        // Most associations have no partition.
        let p = if p.len() % 2 == 0 {
            String::new()
        } else {
            name(p)
        };
        assoc_lines.entry(c.clone()).or_default().push_str(&format!(
            "{a}|{u}|{p}|root|1|{}|{}|||||normal|\n",
            num(*max_jobs),
            num(*max_submit)
        ));
        expected.assocs.insert(
            (c, a, u, p),
            Assoc {
                max_jobs: *max_jobs,
                max_submit_jobs: *max_submit,
            },
        );
    }
    // `show user withassoc` is not per cluster: every cluster's call lists all of them.
    let mut defaults = String::new();
    for (i, u, a) in &m.defaults {
        let (c, u, a) = (cluster(*i), name(u), name(a));
        defaults.push_str(&format!("{u}|{c}|{a}\n"));
        expected.defaults.insert((c, u), a);
    }
    for c in &clusters {
        let assocs = assoc_lines.get(c).cloned().unwrap_or_default();
        show.per_cluster.push((assocs, defaults.clone()));
    }
    let got = parse_sacctmgr(&clusters, &show).expect("every cluster is listed");
    assert_eq!(got, expected, "{show:#?}");
}
