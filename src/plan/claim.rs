//! Claims: how each declared object relates to what the directory holds (its own entry, adoptable,
//! another's, a tombstone's), and whether a username is taken or was purged.

use super::*;

impl<'a> Planner<'a> {
    /// Decides whether a declared object may own `existing` (or create it), per DESIGN.md §5.2.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn claim<'o>(
        &self,
        kind: Kind,
        key: &Key,
        what: &str,
        existing: Option<&'o Entry>,
        tombstone: Option<&'o Entry>,
        identity: &str,
        adopt_annotation: bool,
    ) -> Result<Claim<'o>, (&'static str, String)> {
        let cfg = self.config();
        let mine = owner(cfg, kind, key);
        let my_prefix = format!("{}/", cfg.manager_id);
        match existing {
            None => match tombstone {
                None => Ok(Claim::New { number: None }),
                Some(t) if t.first("rosterIdentity") == Some(identity) => Ok(Claim::New {
                    number: t.number(if kind == Kind::Account {
                        "uidNumber"
                    } else {
                        "gidNumber"
                    }),
                }),
                Some(_) => Err((
                    "NameRetired",
                    format!(
                        "{what} belonged to an identity that was purged; names are never reused"
                    ),
                )),
            },
            Some(e) => match e.owner() {
                Some(o) if o == mine => Ok(Claim::Managed(e)),
                Some(o)
                    if o.starts_with(&my_prefix) && e.first("rosterIdentity") == Some(identity) =>
                {
                    Ok(Claim::Managed(e))
                }
                Some(o) if !o.starts_with(&my_prefix) => Err((
                    "OwnedElsewhere",
                    format!(
                        "{what} is managed by another Roster installation (managerId {:?})",
                        o.split('/').next().unwrap_or("")
                    ),
                )),
                Some(_) => Err((
                    "NameTaken",
                    format!("{what} is already taken by another identity"),
                )),
                None => {
                    let a = &cfg.adoption;
                    if adopt_annotation
                        && a.enabled
                        && a.namespaces.iter().any(|n| n == &key.namespace)
                    {
                        Ok(Claim::Adopt(e))
                    } else {
                        Err((
                            "Unmanaged",
                            format!(
                                "{what} exists ({}) and is not managed by Roster; adoption needs adoption.enabled with namespace {} in the config and the annotation roster.io/adopt: \"true\"",
                                e.dn, key.namespace
                            ),
                        ))
                    }
                }
            },
        }
    }

    /// A username names an account that will exist: declared (and not blocked) or in the directory.
    /// A username that is only a tombstone of Roster's (purged, not declared again).
    pub(super) fn username_purged(&self, username: &str) -> bool {
        !self.username_exists(username)
            && self
                .observed
                .tombstones
                .get(&format!("Account:{username}"))
                .and_then(parse_owner)
                .is_some_and(|(_, [mgr, ..])| mgr == self.config().manager_id)
    }

    pub(super) fn username_exists(&self, username: &str) -> bool {
        self.index.declared_usernames.contains(username)
            || self.observed.accounts.contains_key(username)
    }
}
