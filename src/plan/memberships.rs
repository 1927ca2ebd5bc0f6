//! Group memberships of the declared accounts, and People (the identities accounts belong to).

use super::*;

impl<'a> Planner<'a> {
    /// memberUid of every project group = its effective members that exist or will exist.
    pub(super) fn plan_memberships(
        &mut self,
        usable: &BTreeSet<String>,
        purged: &BTreeSet<String>,
    ) {
        let retained = self.undeclared_accounts(purged);
        for (key, project) in &self.site.projects {
            let Some(status) = self.statuses.get(&Target {
                kind: Kind::Project,
                key: key.clone(),
            }) else {
                continue;
            };
            if status.is_blocked() {
                continue;
            }
            let dn = status.dn.clone().unwrap_or_default();
            let group = group_name(project);
            let mut members = self.index.effective_members(key, project);
            // A declared account that is Invalid or in Conflict is never written, and its name
            // may belong to someone else: leave it out. Undeclared names must be in the directory.
            members.retain(|u| {
                usable.contains(u)
                    || (!self.index.declared_usernames.contains(u.as_str())
                        && self.observed.accounts.contains_key(u)
                        && !purged.contains(u))
            });
            let target = Target {
                kind: Kind::Project,
                key: key.clone(),
            };
            let existing = self.observed.groups.get(&group).filter(|e| e.dn == dn);
            // Nothing of an undeclared identity is taken before its purge: Roster's accounts
            // of the project's namespace that this run does not declare (absent without
            // --prune, removed and not purged yet) and those of an import that did not run keep
            // the memberships the directory holds. The directory is where an aborted source's
            // last contribution is read from.
            if let Some(e) = existing {
                for u in e.values("memberUid") {
                    if retained
                        .get(u.as_str())
                        .is_some_and(|(ns, kept)| *kept || *ns == key.namespace)
                    {
                        members.insert(u.clone());
                    }
                }
            }
            // What Slurm keeps of identities this run does not declare: their memberships here.
            for u in &members {
                if !self.index.declared_usernames.contains(u.as_str()) {
                    self.retained.insert((u.clone(), group.clone()));
                }
            }
            let want: Vec<String> = members.iter().cloned().collect();
            let count = want.len();
            match existing {
                None => {
                    // A new group: put the members into its Add.
                    if let Some(&i) = self.new_groups.get(key)
                        && let Op::Add { attrs, .. } = &mut self.ops_groups[i]
                    {
                        set(attrs, "memberUid", want.iter().cloned());
                    }
                }
                Some(e) => {
                    let have: BTreeSet<String> = e.values("memberUid").iter().cloned().collect();
                    let add: Vec<String> = members.difference(&have).cloned().collect();
                    let del: Vec<String> = have.difference(&members).cloned().collect();
                    let mut changes = vec![];
                    if !add.is_empty() {
                        changes.push(AttrChange::Add("memberUid".into(), add));
                    }
                    if !del.is_empty() {
                        changes.push(AttrChange::Delete("memberUid".into(), del));
                    }
                    if !changes.is_empty() {
                        self.ops_members.push(Op::Modify {
                            target,
                            dn,
                            changes,
                            what: format!("members of group {group}"),
                        });
                    }
                }
            }
            if let Some(s) = self.statuses.get_mut(&Target {
                kind: Kind::Project,
                key: key.clone(),
            }) {
                s.members = count;
            }
        }
    }

    /// Roster's accounts in the directory that this run does not declare and does not purge:
    /// username → (namespace, whether an import that did not run protects it).
    pub(super) fn undeclared_accounts(
        &self,
        purged: &BTreeSet<String>,
    ) -> BTreeMap<&'a str, (&'a str, bool)> {
        let cfg = self.config();
        let mut out = BTreeMap::new();
        for (u, e) in &self.observed.accounts {
            let Some((_, [mgr, ns, kind, name])) = parse_owner(e) else {
                continue;
            };
            if mgr != cfg.manager_id
                || kind != "Account"
                || self.index.declared_usernames.contains(u.as_str())
                || purged.contains(u)
            {
                continue;
            }
            let kept = self.policy.keep.contains(&Key::new(ns, name));
            out.insert(u.as_str(), (ns, kept));
        }
        out
    }

    /// A Person's phase follows its accounts.
    pub(super) fn plan_people(&mut self) {
        for (key, person) in &self.site.people {
            let accounts: Vec<Phase> = self
                .index
                .accounts_of_person
                .get(key)
                .into_iter()
                .flatten()
                .filter_map(|k| {
                    self.statuses
                        .get(&Target {
                            kind: Kind::Account,
                            key: k.clone(),
                        })
                        .map(|s| s.phase)
                })
                .collect();
            let expired = person
                .spec
                .valid_until
                .as_deref()
                .and_then(|v| parse_valid_until(v).ok())
                .is_some_and(|e| e <= self.now);
            let phase = if person.spec.locked || expired {
                Phase::Deactivated
            } else if accounts.contains(&Phase::Active)
                || accounts.contains(&Phase::Pending)
                || accounts.is_empty()
            {
                Phase::Active
            } else {
                accounts[0]
            };
            let s = self.status(Kind::Person, key);
            s.phase = phase;
            s.members = accounts.len();
        }
    }
}
