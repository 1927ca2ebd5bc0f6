//! File mode: where an ImportSource's records come from without a cluster — a CSV `path`
//! relative to the manifest, and Secrets (a ConfigMap/Secret reference, the LDAP bind
//! password, the SQL DSN) as files `<secrets-dir>/<name>/<key>`.

use std::path::Path;

use super::read::{self, Row, RowError};
use super::source::Secrets;
use crate::api::{ImportSource, KeyRef};

/// File mode's references: the manifest's directory and `--secrets-dir`.
pub struct Files<'a> {
    pub manifest_dir: &'a Path,
    pub secrets_dir: Option<&'a Path>,
}

impl Secrets for Files<'_> {
    /// Reads `<dir>/<name>/<key>` (a Secret or ConfigMap as files).
    async fn key(&self, r: &KeyRef, _secret: bool, what: &str) -> Result<String, String> {
        let Some(dir) = self.secrets_dir else {
            return Err(format!(
                "{what} refers to {}/{}: pass --secrets-dir (files <dir>/<name>/<key>)",
                r.name, r.key
            ));
        };
        let path = dir.join(&r.name).join(&r.key);
        std::fs::read_to_string(&path).map_err(|e| format!("{what}: {}: {e}", path.display()))
    }

    fn csv_path(&self, p: &str) -> Result<String, String> {
        let path = self.manifest_dir.join(p);
        read::read_csv_file(&path).map_err(|e| format!("reader.csv.path {}: {e}", path.display()))
    }
}

/// The source's rows (and the rows it could not read). An unreachable source is an error,
/// never an empty list.
pub async fn read_source(
    src: &ImportSource,
    manifest_dir: &Path,
    secrets_dir: Option<&Path>,
) -> Result<(Vec<Row>, Vec<RowError>), String> {
    let files = Files {
        manifest_dir,
        secrets_dir,
    };
    super::source::read(src, &files).await
}
