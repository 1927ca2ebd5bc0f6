//! Secrets from files (mounted Kubernetes Secrets) or environment variables: one reader for the
//! directory's bind password, Gold's key, the accounting database's DSN and the relay's password.
//! A leaf: it imports nothing of Roster's, so the configuration and the clients can both use it.

use std::path::Path;

/// A secret from a file (a mounted Kubernetes Secret; relative paths against `base_dir`) or an
/// environment variable; `key` names the pair in messages (`ldap.bindPassword` →
/// `ldap.bindPasswordFile`, `ldap.bindPasswordEnv`). A file's trailing line break is dropped; the
/// value itself is never part of an error.
pub fn read(
    base_dir: &Path,
    file: Option<&Path>,
    env: Option<&str>,
    key: &str,
) -> Result<Option<String>, String> {
    if let Some(f) = file {
        let f = if f.is_absolute() {
            f.to_path_buf()
        } else {
            base_dir.join(f)
        };
        let text =
            std::fs::read_to_string(&f).map_err(|e| format!("{key}File {}: {e}", f.display()))?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("{key}Env: environment variable {var} is not set"));
    }
    Ok(None)
}
