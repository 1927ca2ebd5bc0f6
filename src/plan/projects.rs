//! Projects: their POSIX groups (numbers, members, leaders), and projects being removed.

use super::removals::Removal;
use super::*;

impl<'a> Planner<'a> {
    /// Projects first: their groups must exist before accounts name them as primary group.
    /// Returns group name → the gid it has or will get.
    pub(super) fn plan_projects(&mut self) -> BTreeMap<String, Number> {
        let cfg = self.config();
        let mut gids = BTreeMap::new();
        let mut names_seen: BTreeMap<String, Key> = BTreeMap::new();
        let mut gid_seen: BTreeMap<i64, Key> = BTreeMap::new();
        // The Project that owns its group in the directory is planned first, so a claim on the
        // same name from another object (another namespace) is the one in Conflict, never the
        // owner.
        let mut projects: Vec<(&Key, &Project)> = self.site.projects.iter().collect();
        projects.sort_by_key(|(key, project)| {
            let mine = owner(cfg, Kind::Project, key);
            let owns = self
                .observed
                .groups
                .get(&group_name(project))
                .is_some_and(|e| e.owner() == Some(mine.as_str()));
            !owns
        });
        for (key, project) in projects {
            let group = group_name(project);
            let status = self.status(Kind::Project, key);
            status.dn = None;
            if let Some(first) = names_seen.get(&group) {
                let m = format!("groupName {group} is also declared by Project {first}");
                conflict(status, "NameTaken", m);
                continue;
            }
            names_seen.insert(group.clone(), key.clone());
            if let Some(g) = project.spec.gid_number {
                if let Some(first) = gid_seen.get(&g) {
                    let m = format!("spec.gidNumber {g} is also declared by Project {first}");
                    conflict(status, "NumberTaken", m);
                    continue;
                }
                gid_seen.insert(g, key.clone());
            }
            let mut purged = vec![];
            for (field, list) in [
                ("leaders", &project.spec.leaders),
                ("members", &project.spec.members),
            ] {
                for (i, u) in list.iter().enumerate() {
                    if self.username_purged(u) {
                        // Roster's own account, purged: it is no member any more, and the
                        // project carries on (a stale list must not freeze it).
                        purged.push(format!("spec.{field}[{i}] {u}"));
                    } else if !self.username_exists(u) {
                        let m = format!(
                            "spec.{field}[{i}]: no Account with username {u:?} is declared or in the directory"
                        );
                        invalid(self.status(Kind::Project, key), "UnknownMember", m);
                    }
                }
            }
            if !purged.is_empty() {
                let m = format!(
                    "{} name purged accounts and are left out; remove them from the list",
                    purged.join(", ")
                );
                self.status(Kind::Project, key).conditions.push(cond(
                    "MembersPurged",
                    true,
                    "AccountPurged",
                    m,
                ));
            }
            if self.status(Kind::Project, key).is_blocked() {
                continue;
            }
            let what = format!("group {group}");
            if let Some(dns) = self.observed.duplicate_groups.get(&group) {
                let m = format!(
                    "{what} is held by {} directory entries ({}); Roster will not pick one: remove the extra entries",
                    dns.len(),
                    dns.join("; ")
                );
                conflict(self.status(Kind::Project, key), "DuplicateEntries", m);
                continue;
            }
            let identity = format!("{}/Project/{}", key.namespace, key.name);
            let existing = self.observed.groups.get(&group);
            let tomb = self.observed.tombstones.get(&format!("Project:{group}"));
            let claim = match self.claim(
                Kind::Project,
                key,
                &what,
                existing,
                tomb,
                &identity,
                adopt(project),
            ) {
                Ok(c) => c,
                Err((reason, m)) => {
                    conflict(self.status(Kind::Project, key), reason, m);
                    continue;
                }
            };
            let declared = project.spec.gid_number.map(|g| g as u32);
            let existing_gid = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => e.number("gidNumber"),
                Claim::New { number } => *number,
            };
            if let (Some(d), Some(e)) = (declared, existing_gid)
                && d != e
            {
                let m = format!(
                    "spec.gidNumber {d} differs from the directory's {e}; gid numbers never change"
                );
                invalid(self.status(Kind::Project, key), "NumberMismatch", m);
                continue;
            }
            if let Some(m) = outside_range("gidNumber", declared, &claim, cfg.gid_range) {
                invalid(self.status(Kind::Project, key), "NumberOutOfRange", m);
                continue;
            }
            if let (Some(d), Claim::New { .. }) = (declared, &claim)
                && self.index.gids_in_use.contains(&d)
            {
                let m = format!("spec.gidNumber {d} is already used by another group");
                conflict(self.status(Kind::Project, key), "NumberTaken", m);
                continue;
            }
            let number = existing_gid.or(declared);
            let dn = match &claim {
                Claim::Managed(e) | Claim::Adopt(e) => e.dn.clone(),
                Claim::New { .. } => {
                    format!("cn={},{}", dn_escape(group.as_str()), cfg.groups_dn())
                }
            };
            let mut attrs = Attrs::new();
            set(&mut attrs, "cn", [group.clone()]);
            set(&mut attrs, "description", project.spec.description.clone());
            set(&mut attrs, "rosterOwner", [owner(cfg, Kind::Project, key)]);
            set(&mut attrs, "rosterKind", ["Project".to_string()]);
            set(&mut attrs, "rosterIdentity", [identity.clone()]);
            set(&mut attrs, "rosterState", ["Active".to_string()]);
            // Declared again before its purge: the removal is undone.
            set(&mut attrs, "rosterGoneAt", None::<String>);
            set(&mut attrs, "rosterDeactivateAt", None::<String>);
            set(&mut attrs, "rosterDeactivatedAt", None::<String>);
            set(&mut attrs, "rosterPurgeAt", None::<String>);
            let target = Target {
                kind: Kind::Project,
                key: key.clone(),
            };
            match claim {
                Claim::New { .. } => {
                    set(
                        &mut attrs,
                        "objectClass",
                        ["posixGroup".to_string(), "rosterManaged".to_string()],
                    );
                    let gid = number.map(Number::Fixed).unwrap_or(Number::Allocate);
                    gids.insert(group.clone(), gid.clone());
                    self.new_groups.insert(key.clone(), self.ops_groups.len());
                    self.ops_groups.push(Op::Add {
                        target,
                        dn: dn.clone(),
                        attrs,
                        uid: None,
                        gid: Some(gid),
                        what,
                    });
                }
                Claim::Managed(e) | Claim::Adopt(e) => {
                    let number = number.unwrap_or(0);
                    gids.insert(group.clone(), Number::Fixed(number));
                    let mut changes = adoption_changes(e, &["rosterManaged"]);
                    if changes
                        .iter()
                        .any(|c| matches!(c, AttrChange::Add(a, _) if a == "objectClass"))
                    {
                        set(&mut attrs, "rosterAdopted", ["TRUE".to_string()]);
                    }
                    changes.extend(diff(e, &attrs));
                    if !changes.is_empty() {
                        self.ops_groups.push(Op::Modify {
                            target,
                            dn: dn.clone(),
                            changes,
                            what,
                        });
                    }
                }
            }
            let s = self.status(Kind::Project, key);
            s.dn = Some(dn);
            s.gid_number = number;
        }
        gids
    }

    /// Projects gone from the declaration: their group is deactivated with a purge time
    /// (`gracePeriods.projectPurgeAfter`) and purged behind a `Project:<group>` tombstone, so the
    /// group name and gid are never handed to anyone else.
    pub(super) fn plan_project_removals(&mut self) {
        let cfg = self.config();
        let namespaces = self.site.namespaces();
        let site_grace = cfg.grace_periods.project_purge_after.signed();
        let declared: BTreeSet<String> = self.site.projects.values().map(group_name).collect();
        let groups: Vec<&'a Entry> = self.observed.groups.values().collect();
        for e in groups {
            let Some((o, [mgr, ns, kind, name])) = parse_owner(e) else {
                continue;
            };
            let group = e.first("cn").unwrap_or("").to_string();
            if mgr != cfg.manager_id || kind != "Project" || declared.contains(&group) {
                continue;
            }
            let key = Key::new(ns, name);
            // As for accounts: the run that declares the removal decides the purge time; any
            // other run carries out what the directory records.
            let (policy, decides) = match self.policy.removed_projects.get(&key) {
                Some(p) => (*p, true),
                None if self.policy.prune && namespaces.contains(ns) => {
                    (DeletionPolicy::Deactivate, true)
                }
                None if e.first("rosterGoneAt").is_some() => (DeletionPolicy::Deactivate, false),
                None => continue,
            };
            let grace = match policy {
                DeletionPolicy::Orphan => continue,
                DeletionPolicy::PurgeImmediately => jiff::SignedDuration::ZERO,
                DeletionPolicy::Deactivate => site_grace,
            };
            let target = Target {
                kind: Kind::Project,
                key: key.clone(),
            };
            let r = Removal::of(
                e,
                self.now,
                decides.then_some((grace, jiff::SignedDuration::ZERO)),
            );
            if !r.deactivated && r.deactivate_at.is_none() {
                continue;
            }
            if r.purge_due {
                let description =
                    format!("purged group {group}; its name and gid are never reused");
                self.push_tombstone(
                    &target,
                    e,
                    &format!("Project:{group}"),
                    o,
                    &["gidNumber"],
                    description,
                );
                self.ops_prune.push(Op::Delete {
                    target: target.clone(),
                    dn: e.dn.clone(),
                    what: format!("purge group {group}"),
                });
                let s = self.status(Kind::Project, &key);
                s.phase = Phase::Purged;
                s.gid_number = e.number("gidNumber");
                continue;
            }
            self.record_removal(&target, e, &r, false, format!("removed group {group}"));
            let s = self.status(Kind::Project, &key);
            s.gid_number = e.number("gidNumber");
            s.conditions.push(cond(
                "Deactivated",
                true,
                "Removed",
                format!("Project {key} was removed"),
            ));
        }
    }
}
