//! Accounts: their entries (numbers, attributes, locks and validity), personal groups and the
//! attributes an account's entry should carry.

use super::*;

impl<'a> Planner<'a> {
    /// Accounts: ownership, numbers, attributes, lock state. Returns the usernames that are
    /// (or will be) in the directory under Roster's management, for group membership.
    pub(super) fn plan_accounts(
        &mut self,
        project_gids: &BTreeMap<String, Number>,
    ) -> BTreeSet<String> {
        let cfg = self.config();
        let mut usable = BTreeSet::new();
        let mut names_seen: BTreeMap<String, Key> = BTreeMap::new();
        let mut uid_seen: BTreeMap<i64, Key> = BTreeMap::new();
        let declared_groups: BTreeSet<String> =
            self.site.projects.values().map(group_name).collect();
        // Accounts that own their entry in the directory are planned first (see plan_projects):
        // another namespace declaring the same username or uid cannot knock the owner out.
        let mut accounts: Vec<(&Key, &Account)> = self.site.accounts.iter().collect();
        accounts.sort_by_key(|(key, account)| {
            let mine = owner(cfg, Kind::Account, key);
            let owns = self
                .observed
                .accounts
                .get(&account.spec.username)
                .is_some_and(|e| e.owner() == Some(mine.as_str()));
            !owns
        });
        for (key, account) in accounts {
            let spec = &account.spec;
            let username = spec.username.clone();
            let target = Target {
                kind: Kind::Account,
                key: key.clone(),
            };
            self.status(Kind::Account, key);
            // Admission-equivalent checks that also hold in file mode.
            if RESERVED_USERNAMES.contains(&username.as_str()) {
                invalid(
                    self.status(Kind::Account, key),
                    "ReservedName",
                    format!("spec.username {username:?} is reserved for a system account"),
                );
                continue;
            }
            if let Some(first) = names_seen.get(&username) {
                let m = format!("spec.username {username} is also declared by Account {first}");
                conflict(self.status(Kind::Account, key), "NameTaken", m);
                continue;
            }
            names_seen.insert(username.clone(), key.clone());
            if let Some(u) = spec.uid_number {
                if let Some(first) = uid_seen.get(&u) {
                    let m = format!("spec.uidNumber {u} is also declared by Account {first}");
                    conflict(self.status(Kind::Account, key), "NumberTaken", m);
                    continue;
                }
                uid_seen.insert(u, key.clone());
            }
            let person_key = Key::new(&key.namespace, &spec.person);
            let person = self.site.people.get(&person_key);
            if person.is_none() {
                let m = format!(
                    "spec.person: no Person {:?} in namespace {}",
                    spec.person, key.namespace
                );
                invalid(self.status(Kind::Account, key), "PersonMissing", m);
            }
            for (i, p) in spec.projects.iter().enumerate() {
                if !self
                    .site
                    .projects
                    .contains_key(&Key::new(&key.namespace, p))
                {
                    let m = format!(
                        "spec.projects[{i}]: no Project {p:?} in namespace {}",
                        key.namespace
                    );
                    invalid(self.status(Kind::Account, key), "ProjectMissing", m);
                }
            }
            let memberships = self.memberships_of(account);
            let default_group = match &spec.default_project {
                Some(p) => match self.site.projects.get(&Key::new(&key.namespace, p)) {
                    None => {
                        let m = format!(
                            "spec.defaultProject: no Project {p:?} in namespace {}",
                            key.namespace
                        );
                        invalid(self.status(Kind::Account, key), "ProjectMissing", m);
                        None
                    }
                    Some(proj) => {
                        let g = group_name(proj);
                        if !memberships.contains(&g) {
                            let m = format!(
                                "spec.defaultProject: {p:?} is not one of the account's projects ({})",
                                memberships.iter().cloned().collect::<Vec<_>>().join(", ")
                            );
                            invalid(self.status(Kind::Account, key), "NotAMember", m);
                        }
                        Some(g)
                    }
                },
                None => None,
            };
            if cfg.defaults.primary_group == PrimaryGroup::DefaultProject
                && spec.default_project.is_none()
            {
                invalid(self.status(Kind::Account, key), "DefaultProjectRequired", "spec.defaultProject is required: the site's primary group is the default project's group".into());
            }
            if self.status(Kind::Account, key).is_blocked() {
                continue;
            }
            let person = person.expect("checked above");
            let identity = format!("{}/{}", key.namespace, spec.person);
            let what = format!("username {username}");
            if let Some(dns) = self.observed.duplicate_accounts.get(&username) {
                let m = format!(
                    "{what} is held by {} directory entries ({}); Roster will not pick one: remove the extra entries",
                    dns.len(),
                    dns.join("; ")
                );
                conflict(self.status(Kind::Account, key), "DuplicateEntries", m);
                continue;
            }
            let existing = self.observed.accounts.get(&username);
            let tomb = self.observed.tombstones.get(&format!("Account:{username}"));
            let claim = match self.claim(
                Kind::Account,
                key,
                &what,
                existing,
                tomb,
                &identity,
                adopt(account),
            ) {
                Ok(c) => c,
                Err((reason, m)) => {
                    conflict(self.status(Kind::Account, key), reason, m);
                    continue;
                }
            };
            if let Claim::Adopt(e) = &claim {
                if !e.has_class("inetOrgPerson") {
                    let m = format!("{} cannot be adopted: it is not an inetOrgPerson", e.dn);
                    conflict(self.status(Kind::Account, key), "NotAdoptable", m);
                    continue;
                }
                if let Some(u) = e.number("uidNumber")
                    && !cfg.uid_range.contains(u)
                {
                    let m = format!(
                        "{} cannot be adopted: uidNumber {u} is outside the configured uidRange",
                        e.dn
                    );
                    conflict(self.status(Kind::Account, key), "NotAdoptable", m);
                    continue;
                }
            }
            let declared = spec.uid_number.map(|u| u as u32);
            let existing_uid = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => e.number("uidNumber"),
                Claim::New { number } => *number,
            };
            if let (Some(d), Some(e)) = (declared, existing_uid)
                && d != e
            {
                let m = format!(
                    "spec.uidNumber {d} differs from the directory's {e}; uid numbers never change"
                );
                invalid(self.status(Kind::Account, key), "NumberMismatch", m);
                continue;
            }
            // (The personal group's gid is the uid.)
            if let Some(m) = outside_range("uidNumber", declared, &claim, cfg.uid_range) {
                invalid(self.status(Kind::Account, key), "NumberOutOfRange", m);
                continue;
            }
            if let (Some(d), Claim::New { number: None }) = (declared, &claim)
                && self.index.uids_in_use.contains(&d)
            {
                let m = format!("spec.uidNumber {d} is already used by another account");
                conflict(self.status(Kind::Account, key), "NumberTaken", m);
                continue;
            }
            // The personal group shares the account's name and number.
            let personal = cfg.defaults.primary_group == PrimaryGroup::Personal;
            let personal_existing = self.observed.groups.get(&username);
            if personal {
                let mine = owner(cfg, Kind::Account, key);
                // A Project declaring the name of a personal group this account already owns
                // is that Project's Conflict, not the account's.
                let owned = personal_existing.is_some_and(|g| g.owner() == Some(mine.as_str()));
                let clash = (declared_groups.contains(&username) && !owned)
                    || personal_existing.is_some_and(|g| {
                        g.owner() != Some(mine.as_str())
                            && !(g.first("rosterIdentity") == Some(identity.as_str())
                                && g.owner().is_some_and(|o| {
                                    o.starts_with(&format!("{}/", cfg.manager_id))
                                }))
                    });
                if clash {
                    let m = format!(
                        "the personal group {username} cannot be created: a group with that name exists or is declared"
                    );
                    conflict(self.status(Kind::Account, key), "GroupNameTaken", m);
                    continue;
                }
            }
            let uid_number = existing_uid.or(declared);
            let (gid, gid_number) = if personal {
                (
                    uid_number
                        .map(Number::Fixed)
                        .unwrap_or(Number::UidOfAccount(username.clone())),
                    uid_number,
                )
            } else {
                let g = default_group.clone().unwrap_or_default();
                match project_gids.get(&g) {
                    Some(Number::Fixed(n)) => (Number::Fixed(*n), Some(*n)),
                    _ => (Number::GidOfGroup(g), None),
                }
            };

            // Lifecycle in this slice: locked or expired (account or person) → deactivated.
            let expiry = [
                spec.valid_until.as_deref(),
                person.spec.valid_until.as_deref(),
            ]
            .into_iter()
            .flatten()
            .filter_map(|v| parse_valid_until(v).ok())
            .min();
            let reason = if spec.locked {
                Some("Locked")
            } else if person.spec.locked {
                Some("PersonLocked")
            } else if expiry.is_some_and(|e| e <= self.now) {
                Some("Expired")
            } else {
                None
            };
            let next_transition = match (reason, expiry) {
                (None, Some(e)) if e > self.now => {
                    self.wake_at(e);
                    Some(("Expire", e))
                }
                _ => None,
            };
            // Announce expiry ahead of time (gracePeriods.expiryWarning).
            let expiring = match next_transition {
                Some((_, e)) => {
                    let warn = cfg.grace_periods.expiry_warning.signed();
                    let from = e.checked_sub(warn).unwrap_or(self.now);
                    if from <= self.now {
                        Some(e)
                    } else {
                        self.wake_at(from);
                        None
                    }
                }
                None => None,
            };
            let existing_entry = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => Some(*e),
                Claim::New { .. } => None,
            };
            let attrs = self.account_attrs(
                key,
                account,
                person,
                &identity,
                reason,
                expiry,
                existing_entry,
            );
            let dn = match existing_entry {
                Some(e) => e.dn.clone(),
                None => format!("uid={},{}", dn_escape(username.as_str()), cfg.people_dn()),
            };
            match claim {
                Claim::New { .. } => {
                    let mut attrs = attrs;
                    let mut classes = vec![
                        "inetOrgPerson",
                        "posixAccount",
                        "shadowAccount",
                        "rosterManaged",
                    ];
                    if !spec.ssh_public_keys.is_empty() {
                        classes.push("ldapPublicKey");
                    }
                    set(
                        &mut attrs,
                        "objectClass",
                        classes.iter().map(|c| c.to_string()),
                    );
                    set(&mut attrs, "uid", [username.clone()]);
                    let uid = uid_number.map(Number::Fixed).unwrap_or(Number::Allocate);
                    self.ops_accounts.push(Op::Add {
                        target: target.clone(),
                        dn: dn.clone(),
                        attrs,
                        uid: Some(uid),
                        gid: Some(gid.clone()),
                        what: what.clone(),
                    });
                }
                Claim::Managed(e) | Claim::Adopt(e) => {
                    let mut attrs = attrs;
                    let mut wanted = vec!["rosterManaged", "shadowAccount"];
                    if !spec.ssh_public_keys.is_empty() {
                        wanted.push("ldapPublicKey");
                    }
                    let mut changes = adoption_changes(e, &wanted);
                    if e.owner().is_none() {
                        set(&mut attrs, "rosterAdopted", ["TRUE".to_string()]);
                    }
                    if let Number::Fixed(n) = &gid {
                        set(&mut attrs, "gidNumber", [n.to_string()]);
                    }
                    changes.extend(diff(e, &attrs));
                    if spec.ssh_public_keys.is_empty() && e.has_class("ldapPublicKey") {
                        changes.push(AttrChange::Delete(
                            "objectClass".into(),
                            vec!["ldapPublicKey".into()],
                        ));
                    }
                    if !changes.is_empty() {
                        self.ops_accounts.push(Op::Modify {
                            target: target.clone(),
                            dn: dn.clone(),
                            changes,
                            what: what.clone(),
                        });
                    }
                }
            }
            if personal {
                self.plan_personal_group(key, &username, &identity, uid_number, personal_existing);
            }
            usable.insert(username.clone());
            let now = self.now;
            let s = self.status(Kind::Account, key);
            s.dn = Some(dn);
            s.uid_number = uid_number;
            s.gid_number = gid_number;
            s.projects = memberships.into_iter().collect();
            s.next_transition = next_transition;
            if let Some(e) = expiring {
                let days = (e.as_second() - now.as_second()).div_euclid(86_400);
                s.conditions.push(cond(
                    "Expiring",
                    true,
                    "ValidUntilSoon",
                    format!("Account {key} expires at {e} (in {days} days); extend validUntil to keep it"),
                ));
            }
            if let Some(r) = reason {
                s.phase = Phase::Deactivated;
                s.conditions
                    .push(cond("Deactivated", true, r, deactivation_message(r, key)));
            }
        }
        usable
    }

    pub(super) fn plan_personal_group(
        &mut self,
        key: &Key,
        username: &str,
        identity: &str,
        uid: Option<u32>,
        existing: Option<&Entry>,
    ) {
        let cfg = self.config();
        let target = Target {
            kind: Kind::Account,
            key: key.clone(),
        };
        let mut attrs = Attrs::new();
        set(&mut attrs, "cn", [username.to_string()]);
        set(&mut attrs, "rosterOwner", [owner(cfg, Kind::Account, key)]);
        set(&mut attrs, "rosterKind", ["PersonalGroup".to_string()]);
        set(&mut attrs, "rosterIdentity", [identity.to_string()]);
        set(&mut attrs, "rosterState", ["Active".to_string()]);
        let what = format!("personal group {username}");
        match existing {
            None => {
                set(
                    &mut attrs,
                    "objectClass",
                    ["posixGroup".to_string(), "rosterManaged".to_string()],
                );
                let gid = uid
                    .map(Number::Fixed)
                    .unwrap_or(Number::UidOfAccount(username.to_string()));
                let dn = format!("cn={},{}", dn_escape(username), cfg.groups_dn());
                self.ops_accounts.push(Op::Add {
                    target,
                    dn,
                    attrs,
                    uid: None,
                    gid: Some(gid),
                    what,
                });
            }
            Some(e) => {
                let changes = diff(e, &attrs);
                if !changes.is_empty() {
                    self.ops_accounts.push(Op::Modify {
                        target,
                        dn: e.dn.clone(),
                        changes,
                        what,
                    });
                }
            }
        }
    }

    /// The group names of every project whose effective membership includes the account.
    pub(super) fn memberships_of(&self, account: &Account) -> BTreeSet<String> {
        self.index
            .memberships
            .get(&account.spec.username)
            .cloned()
            .unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn account_attrs(
        &self,
        key: &Key,
        account: &Account,
        person: &Person,
        identity: &str,
        deactivated: Option<&str>,
        expiry: Option<jiff::Timestamp>,
        existing: Option<&Entry>,
    ) -> Attrs {
        let cfg = self.config();
        let spec = &account.spec;
        let p = &person.spec;
        let mut a = Attrs::new();
        let display = p.display();
        set(&mut a, "cn", [display.clone()]);
        set(&mut a, "sn", [p.family_name.clone()]);
        set(&mut a, "givenName", [p.given_name.clone()]);
        set(&mut a, "displayName", p.display_name.clone());
        set(&mut a, "mail", p.email.clone());
        set(&mut a, "o", p.institute.clone());
        set(&mut a, "ou", p.department.clone());
        set(&mut a, "telephoneNumber", p.telephone_number.clone());
        let home = spec.home_directory.clone().unwrap_or_else(|| {
            cfg.defaults
                .home_directory
                .replace("{username}", &spec.username)
        });
        set(&mut a, "homeDirectory", [home]);
        set(
            &mut a,
            "loginShell",
            [spec
                .login_shell
                .clone()
                .unwrap_or_else(|| cfg.defaults.login_shell.clone())],
        );
        set(&mut a, "sshPublicKey", spec.ssh_public_keys.iter().cloned());
        set(&mut a, "rosterOwner", [owner(cfg, Kind::Account, key)]);
        set(&mut a, "rosterKind", ["Account".to_string()]);
        set(&mut a, "rosterIdentity", [identity.to_string()]);
        // Imported accounts carry their (sourceUID, recordUID): the import finds its own
        // identities in the directory, before and after a purge.
        let note = |k: &str| {
            account
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .cloned()
        };
        set(
            &mut a,
            "rosterSourceUID",
            note(crate::api::SOURCE_UID_ANNOTATION),
        );
        set(
            &mut a,
            "rosterRecordUID",
            note(crate::api::RECORD_UID_ANNOTATION),
        );
        set(&mut a, "rosterGoneAt", None::<String>);
        set(&mut a, "rosterDeactivateAt", None::<String>);
        set(&mut a, "rosterPurgeAt", None::<String>);
        match deactivated {
            Some(_) => {
                set(&mut a, "pwdAccountLockedTime", [LOCKED_FOREVER.to_string()]);
                set(&mut a, "shadowExpire", ["1".to_string()]);
                set(&mut a, "rosterState", ["Deactivated".to_string()]);
                let since = existing
                    .filter(|e| e.first("rosterState") == Some("Deactivated"))
                    .and_then(|e| e.first("rosterDeactivatedAt").map(str::to_string))
                    .unwrap_or_else(|| generalized_time(self.now));
                set(&mut a, "rosterDeactivatedAt", [since]);
            }
            None => {
                set(&mut a, "pwdAccountLockedTime", None::<String>);
                // shadowExpire: the first UTC day (days since 1970-01-01) that begins at or
                // after the end of validity. A consumer refuses from the start of that day
                // (shadow's rule: today >= shadowExpire), so rounding down would lock up to a
                // day early; validity ending mid-day is enforced to the second by the lock at
                // deactivation, and by the day count only from the next midnight.
                set(
                    &mut a,
                    "shadowExpire",
                    expiry.map(|e| (e.as_second() + 86_399).div_euclid(86_400).to_string()),
                );
                set(&mut a, "rosterState", ["Active".to_string()]);
                set(&mut a, "rosterDeactivatedAt", None::<String>);
            }
        }
        a
    }
}
