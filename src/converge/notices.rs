//! The notices a pass owes ([`crate::notice`]), mailed and recorded in the directory, the same
//! in both modes: after the pass, from the directory as it left it.

use crate::backend::Mode;
use crate::config::Config;
use crate::ldap::Directory;
use crate::notice::{Notice, SENT_ATTR};
use crate::plan::{AttrChange, Observed, Plan};
use crate::site::Site;

/// What became of the notices of one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoticeReport {
    /// Mailed and recorded (planning: would be).
    pub sent: Vec<Notice>,
    /// Not mailed or not recorded, with why (they are tried again by the next pass).
    pub failed: Vec<(Notice, String)>,
    /// Due, but nobody has an address: (object, why).
    pub unreachable: Vec<String>,
}

impl NoticeReport {
    /// Lines for people: `✉ Account physics/ada: accountExpiring to ada@… (expiring 2027-06-30)`.
    pub fn lines(&self, mode: Mode) -> Vec<String> {
        let verb = if mode == Mode::Apply {
            "mailed"
        } else {
            "would mail"
        };
        let to = |n: &Notice| {
            n.mails
                .iter()
                .map(|(a, _, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out: Vec<String> = self
            .sent
            .iter()
            .map(|n| {
                format!(
                    "✉ {}: {} {verb} to {} ({})",
                    n.target,
                    n.kind,
                    to(n),
                    n.mark
                )
            })
            .collect();
        out.extend(
            self.failed
                .iter()
                .map(|(n, e)| format!("x {}: {} to {} not sent: {e}", n.target, n.kind, to(n))),
        );
        out.extend(self.unreachable.iter().map(|u| format!("! {u}")));
        out
    }
}

/// Mails the notices due and records each in the directory once its mails are accepted (a mail
/// refused leaves no record: the next pass tries again); removes the records of transitions
/// that are over. `directory` (the pass's view of it) is kept in step with what is written.
/// Planning, nothing is mailed or written.
pub async fn send(
    config: &Config,
    dir: &mut Directory,
    site: &Site,
    directory: &mut Observed,
    last: &Plan,
    now: jiff::Timestamp,
    mode: Mode,
) -> NoticeReport {
    let mut report = NoticeReport::default();
    let due = crate::notice::due(config, site, directory, last, now);
    report.unreachable = due
        .unreachable
        .iter()
        .map(|(t, why)| format!("{t}: {why}"))
        .collect();
    if mode == Mode::Plan {
        report.sent = due.notices;
        return report;
    }
    for (dn, value) in &due.stale {
        let change = AttrChange::Delete(SENT_ATTR.into(), vec![value.clone()]);
        if dir.modify(dn, std::slice::from_ref(&change)).await.is_ok() {
            record(directory, dn, |values| values.retain(|v| v != value));
        }
    }
    if due.notices.is_empty() {
        return report;
    }
    let Some(smtp) = config.notice_smtp() else {
        return report;
    };
    let mailer = match crate::notify::Mailer::new(smtp, &config.base_dir) {
        Ok(m) => m,
        Err(e) => {
            let e = e.to_string();
            report.failed = due.notices.into_iter().map(|n| (n, e.clone())).collect();
            return report;
        }
    };
    for n in due.notices {
        let mut failure = None;
        for (to, subject, body) in &n.mails {
            if let Err(e) = mailer.send(std::slice::from_ref(to), subject, body).await {
                failure = Some(format!("{to}: {e}"));
                break;
            }
        }
        if let Some(e) = failure {
            report.failed.push((n, e));
            continue;
        }
        let change = AttrChange::Add(SENT_ATTR.into(), vec![n.mark.clone()]);
        match dir.modify(&n.dn, std::slice::from_ref(&change)).await {
            Ok(()) => {
                record(directory, &n.dn, |values| values.push(n.mark.clone()));
                report.sent.push(n);
            }
            Err((_, e)) => report.failed.push((
                n,
                format!("mailed, but not recorded (a later pass mails again): {e}"),
            )),
        }
    }
    report
}

/// Changes the observed entry at `dn` as the write just did.
fn record(directory: &mut Observed, dn: &str, change: impl FnOnce(&mut Vec<String>)) {
    if let Some(mut entry) = directory.at(dn).cloned() {
        let values = entry
            .attrs
            .entry(SENT_ATTR.to_ascii_lowercase())
            .or_default();
        change(values);
        if values.is_empty() {
            entry.attrs.remove(&SENT_ATTR.to_ascii_lowercase());
        }
        directory.refile(entry);
    }
}
