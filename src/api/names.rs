//! Name rules for what Roster hands to the backends (Slurm, Gold, TRES names): checked by
//! configuration, admission and the backends alike, so they live with the API and import nothing.

/// Slurm account, user, cluster and QOS names Roster passes to sacctmgr: no separators, no
/// spaces, nothing sacctmgr could read as a keyword or a list.
pub fn is_slurm_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
        && !s.starts_with('-')
}

/// Free text for sacctmgr (descriptions, organizations): printable ASCII without quotes,
/// `=`, `,` or `|`, at most 100 characters; sacctmgr stores organizations lower-cased.
pub fn clean_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | ' ' | '.' | '_' | '-' | '(' | ')' | '/' | ':' => c,
            _ => ' ',
        })
        .collect();
    out.truncate(100);
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        "-".into()
    } else {
        collapsed
    }
}

/// Gold names Roster writes: the names it also writes to LDAP and Slurm.
pub fn is_gold_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Whether `s` is a TRES name as Slurm spells it (`cpu`, `mem`, `node`, `billing`, `gres/gpu`,
/// `gres/gpu:a100`, `license/matlab`): nothing that could end the `name=count` pair it goes
/// into (`=`, `,`, spaces) or start another sacctmgr argument. Not an admission rule: a CEL rule
/// over map keys has no length bound for the API server's cost estimate, so the Slurm side
/// refuses such a Project instead (`InvalidSlurmName`).
pub fn is_tres_name(s: &str) -> bool {
    let (kind, name) = s.split_once('/').unwrap_or((s, "x"));
    let mut k = kind.bytes();
    k.next().is_some_and(|b| b.is_ascii_lowercase())
        && kind.len() <= 32
        && k.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_inject_into_sacctmgr_are_refused() {
        for ok in ["optics", "cosmo_sim", "a.b-c"] {
            assert!(is_slurm_name(ok), "{ok}");
        }
        // Names are always passed as `name=…`, so even `where` cannot become a keyword.
        for bad in [
            "",
            "-i",
            "alice Account=root",
            "a,b",
            "Upper",
            "x=y",
            "a|b",
            "a b",
        ] {
            assert!(!is_slurm_name(bad), "{bad}");
        }
        assert_eq!(
            clean_text("Quantum \"optics\", lab=1 | x"),
            "Quantum optics lab 1 x"
        );
        assert_eq!(clean_text("Müller"), "M ller");
        assert_eq!(clean_text(""), "-");
    }
}
