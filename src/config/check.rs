//! The configuration's semantic checks: every problem at once, each naming its key, so one run
//! of `roster config check` shows them all.

use super::*;

impl Config {
    /// Every semantic problem, so one run shows them all.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key: &str, message: String| {
            out.push(Problem {
                key: key.into(),
                message,
            })
        };
        if !is_manager_id(&self.manager_id) {
            bad(
                "managerId",
                format!(
                    "{:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
                    self.manager_id
                ),
            );
        }
        let l = &self.ldap;
        let scheme = l.uri.split("://").next().unwrap_or("");
        if !l.uri.contains("://") || !matches!(scheme, "ldap" | "ldaps" | "ldapi") {
            bad(
                "ldap.uri",
                format!("{:?} is not an ldap://, ldaps:// or ldapi:// URI", l.uri),
            );
        }
        match (l.tls.mode, scheme) {
            (TlsMode::Ldaps, s) if s != "ldaps" => {
                bad("ldap.tls.mode", "ldaps needs an ldaps:// URI".to_string())
            }
            (TlsMode::StartTls, s) if s != "ldap" => {
                bad("ldap.tls.mode", "startTLS needs an ldap:// URI".to_string())
            }
            (TlsMode::None, "ldaps") => bad(
                "ldap.tls.mode",
                "an ldaps:// URI needs mode ldaps".to_string(),
            ),
            _ => {}
        }
        if let Some(ca) = &l.tls.ca_file {
            let ca = self.resolve(ca);
            if !ca.is_file() {
                bad(
                    "ldap.tls.caFile",
                    format!("{} is not a readable file", ca.display()),
                );
            }
        }
        for (key, dn) in [
            ("ldap.bindDN", Some(&l.bind_dn)),
            ("ldap.baseDN", Some(&l.base_dn)),
            ("ldap.peopleDN", l.people_dn.as_ref()),
            ("ldap.groupsDN", l.groups_dn.as_ref()),
            ("ldap.tombstonesDN", l.tombstones_dn.as_ref()),
            ("ldap.countersDN", l.counters_dn.as_ref()),
        ] {
            if let Some(dn) = dn
                && let Err(m) = check_dn(dn)
            {
                bad(key, m);
            }
        }
        for (key, dn) in [
            ("ldap.peopleDN", l.people_dn.as_ref()),
            ("ldap.groupsDN", l.groups_dn.as_ref()),
            ("ldap.tombstonesDN", l.tombstones_dn.as_ref()),
            ("ldap.countersDN", l.counters_dn.as_ref()),
        ] {
            if let Some(dn) = dn
                && !dn
                    .to_ascii_lowercase()
                    .ends_with(&l.base_dn.to_ascii_lowercase())
            {
                bad(key, format!("{dn:?} is not below ldap.baseDN"));
            }
        }
        match (&l.bind_password_file, &l.bind_password_env) {
            (None, None) => bad(
                "ldap.bindPasswordFile",
                "missing: set ldap.bindPasswordFile or ldap.bindPasswordEnv".into(),
            ),
            (Some(_), Some(_)) => bad(
                "ldap.bindPasswordEnv",
                "set only one of ldap.bindPasswordFile and ldap.bindPasswordEnv".into(),
            ),
            _ => {}
        }
        if l.timeout_seconds == 0 || l.timeout_seconds > 600 {
            bad(
                "ldap.timeoutSeconds",
                format!("{} is outside 1..=600", l.timeout_seconds),
            );
        }
        if !(1..=10_000).contains(&l.page_size) {
            bad(
                "ldap.pageSize",
                format!("{} is outside 1..=10000", l.page_size),
            );
        }
        for (key, r) in [("uidRange", self.uid_range), ("gidRange", self.gid_range)] {
            if r.min == 0 || r.max > 4_294_967_294 || r.min > r.max {
                bad(
                    key,
                    format!(
                        "{}..{} must satisfy 1 <= min <= max <= 4294967294",
                        r.min, r.max
                    ),
                );
            }
        }
        let d = &self.defaults;
        if !d.login_shell.starts_with('/') || d.login_shell.chars().any(char::is_control) {
            bad(
                "defaults.loginShell",
                format!("{:?} is not an absolute path", d.login_shell),
            );
        }
        if let Err(m) = check_home_template(&d.home_directory) {
            bad("defaults.homeDirectory", m);
        }
        let g = &self.grace_periods;
        for (key, v) in [
            ("gracePeriods.accountPurgeAfter", &g.account_purge_after),
            ("gracePeriods.projectPurgeAfter", &g.project_purge_after),
            (
                "guests.personal.loginGrace",
                &self.guests.personal.login_grace,
            ),
            (
                "guests.personal.purgeAfter",
                &self.guests.personal.purge_after,
            ),
            (
                "guests.technical.loginGrace",
                &self.guests.technical.login_grace,
            ),
            (
                "guests.technical.purgeAfter",
                &self.guests.technical.purge_after,
            ),
            ("guests.maxLoginGrace", &self.guests.max_login_grace),
            ("guests.maxPurgeAfter", &self.guests.max_purge_after),
            ("guests.notice", &self.guests.notice),
            ("gracePeriods.minPurgeAfter", &g.min_purge_after),
            ("gracePeriods.maxPurgeAfter", &g.max_purge_after),
            ("gracePeriods.expiryWarning", &g.expiry_warning),
            ("guard.window", &self.guard.window),
            ("operator.resyncInterval", &self.operator.resync_interval),
        ] {
            if let Some(e) = v.problem() {
                bad(key, e.to_string());
            }
        }
        let (min, max) = (&g.min_purge_after, &g.max_purge_after);
        if min.problem().is_none() && max.problem().is_none() && min.get() > max.get() {
            bad(
                "gracePeriods.minPurgeAfter",
                "is longer than gracePeriods.maxPurgeAfter".into(),
            );
        }
        if let Some(p) = self.guard.max_percent
            && p > 100
        {
            bad("guard.maxPercent", format!("{p} is more than 100"));
        }
        if self
            .operator
            .metrics_address
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            bad(
                "operator.metricsAddress",
                format!("{:?} is not HOST:PORT", self.operator.metrics_address),
            );
        }
        if !(5..=600).contains(&self.operator.lease_duration_seconds) {
            bad(
                "operator.leaseDurationSeconds",
                format!(
                    "{} is outside 5..=600",
                    self.operator.lease_duration_seconds
                ),
            );
        }
        if let Some(sl) = &self.slurm {
            if sl.clusters.is_empty() {
                bad("slurm.clusters", "needs at least one cluster".into());
            }
            for (i, c) in sl.clusters.iter().enumerate() {
                if c.is_empty()
                    || c.len() > 64
                    || !c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    })
                {
                    bad(
                        &format!("slurm.clusters[{i}]"),
                        format!("{c:?} is not a Slurm cluster name (a-z, 0-9, _ and -)"),
                    );
                }
            }
            if !crate::api::names::is_slurm_name(&sl.root_account) {
                bad(
                    "slurm.rootAccount",
                    format!("{:?} is not a Slurm account name", sl.root_account),
                );
            }
            if !(1..=15_000).contains(&sl.batch_size) {
                bad(
                    "slurm.batchSize",
                    format!("{} is outside 1..=15000", sl.batch_size),
                );
            }
            if sl.database_url_file.is_some() && sl.database_url_env.is_some() {
                bad(
                    "slurm.databaseUrlEnv",
                    "set only one of slurm.databaseUrlFile and slurm.databaseUrlEnv".into(),
                );
            }
        }
        let notice_smtp = self.notices.as_ref().and_then(|n| n.smtp.as_ref());
        for (at, smtp) in [
            ("guests.smtp", self.guests.smtp.as_ref()),
            ("notices.smtp", notice_smtp),
        ] {
            let Some(smtp) = smtp else {
                continue;
            };
            if let Err(e) = crate::notify::check_address("from", &smtp.from) {
                bad(&format!("{at}.from"), e.to_string());
            }
            if smtp.host.is_empty() {
                bad(&format!("{at}.host"), "is empty".into());
            }
            if let Some(problem) = crate::notify::credentials_problem(smtp) {
                bad(&format!("{at}.username"), problem);
            }
            if smtp.timeout_seconds == 0 {
                bad(&format!("{at}.timeoutSeconds"), "must be at least 1".into());
            }
        }
        if let Some(n) = &self.notices {
            if let Some(e) = n.before.problem() {
                bad("notices.before", e.to_string());
            }
            for (key, t) in n.templates.all() {
                let unknown = t.unknown_placeholders();
                if !unknown.is_empty() {
                    bad(
                        &format!("notices.templates.{key}"),
                        format!(
                            "unknown placeholder(s) {} (known: {})",
                            unknown
                                .iter()
                                .map(|u| format!("{{{u}}}"))
                                .collect::<Vec<_>>()
                                .join(", "),
                            super::NOTICE_PLACEHOLDERS
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
            if self.notice_smtp().is_none() {
                bad(
                    "notices.smtp",
                    "no relay: set notices.smtp (or guests.smtp), or remove notices".into(),
                );
            }
        }
        if let Some(g) = &self.gold {
            if g.host.is_empty() || g.host.contains(|c: char| c.is_whitespace() || c == '/') {
                bad("gold.host", format!("{:?} is not a host name", g.host));
            }
            if g.actor.is_empty() || !crate::api::names::is_gold_name(&g.actor) {
                bad(
                    "gold.actor",
                    format!("{:?} is not a Gold user name", g.actor),
                );
            }
            if g.auth_key_file.is_some() == g.auth_key_env.is_some() {
                bad(
                    "gold.authKeyFile",
                    "set exactly one of gold.authKeyFile and gold.authKeyEnv".into(),
                );
            }
            if !(1..=600).contains(&g.timeout_seconds) {
                bad(
                    "gold.timeoutSeconds",
                    format!("{} is outside 1..=600", g.timeout_seconds),
                );
            }
            if !(1..=10).contains(&g.attempts) {
                bad("gold.attempts", format!("{} is outside 1..=10", g.attempts));
            }
            if !(1..=64).contains(&g.concurrency) {
                bad(
                    "gold.concurrency",
                    format!("{} is outside 1..=64", g.concurrency),
                );
            }
        }
        for (i, ns) in self.adoption.namespaces.iter().enumerate() {
            if !is_namespace(ns) {
                bad(
                    &format!("adoption.namespaces[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                );
            }
        }
        out
    }
}

pub(super) fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

pub(super) fn is_manager_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

pub(super) fn is_namespace(s: &str) -> bool {
    is_manager_id(s) && !s.ends_with('-')
}

/// A light check that a DN has the `attr=value` shape; the directory has the last word.
pub(super) fn check_dn(dn: &str) -> Result<(), String> {
    if dn.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if dn.chars().any(|c| c == '\0' || c.is_control()) {
        return Err(format!("{dn:?} contains control characters"));
    }
    let first = dn.split(',').next().unwrap_or("");
    if !first.contains('=') {
        return Err(format!("{dn:?} is not a DN (expected attr=value,…)"));
    }
    Ok(())
}

/// The home directory template must be absolute, mention `{username}` and stay put.
pub fn check_home_template(t: &str) -> Result<(), String> {
    if !t.starts_with('/') {
        return Err(format!("{t:?} is not an absolute path"));
    }
    if !t.contains("{username}") {
        return Err(format!("{t:?} does not contain {{username}}"));
    }
    if t.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(format!("{t:?} contains a '.' or '..' segment"));
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{t:?} contains whitespace or control characters"));
    }
    Ok(())
}
