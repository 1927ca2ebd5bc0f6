//! The Slurm accounting backend: observe in bulk from the accounting database (read-only),
//! write through `sacctmgr -i` with argument vectors, many names per call.

pub mod apply;
pub mod desired;
pub mod model;
pub mod observe;

pub use model::*;

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
