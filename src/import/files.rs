//! File mode: where an ImportSource's records come from without a cluster — a CSV `path`
//! relative to the manifest, and Secrets (a ConfigMap/Secret reference, the LDAP bind
//! password, the SQL DSN) as files `<secrets-dir>/<name>/<key>`.

use std::path::Path;

use super::read::{self, Row, RowError};
use crate::api::{ImportSource, KeyRef, ReaderType};

/// Reads `<dir>/<name>/<key>` (a Secret or ConfigMap as files).
fn secret(dir: Option<&Path>, r: &KeyRef, what: &str) -> Result<String, String> {
    let Some(dir) = dir else {
        return Err(format!(
            "{what} refers to {}/{}: pass --secrets-dir (files <dir>/<name>/<key>)",
            r.name, r.key
        ));
    };
    let path = dir.join(&r.name).join(&r.key);
    std::fs::read_to_string(&path).map_err(|e| format!("{what}: {}: {e}", path.display()))
}

/// The source's rows (and the rows it could not read). An unreachable source is an error,
/// never an empty list.
pub async fn read_source(
    src: &ImportSource,
    manifest_dir: &Path,
    secrets_dir: Option<&Path>,
) -> Result<(Vec<Row>, Vec<RowError>), String> {
    let reader = &src.spec.reader;
    match reader.type_ {
        ReaderType::Csv => {
            let csv = reader.csv.as_ref().ok_or("reader.csv is missing")?;
            let text = if let Some(p) = &csv.path {
                let path = manifest_dir.join(p);
                read::read_csv_file(&path)
                    .map_err(|e| format!("reader.csv.path {}: {e}", path.display()))?
            } else if let Some(r) = csv.config_map_ref.as_ref().or(csv.secret_ref.as_ref()) {
                secret(secrets_dir, r, "reader.csv")?
            } else {
                return Err("reader.csv needs path, configMapRef or secretRef".into());
            };
            read::parse_csv(&text, csv).map_err(|e| e.to_string())
        }
        ReaderType::Ldap => {
            let l = reader.ldap.as_ref().ok_or("reader.ldap is missing")?;
            let password = match &l.bind_password_ref {
                Some(r) => Some(secret(secrets_dir, r, "reader.ldap.bindPasswordRef")?),
                None => None,
            };
            let ca = match &l.ca_ref {
                Some(r) => Some(secret(secrets_dir, r, "reader.ldap.caRef")?),
                None => None,
            };
            let rows = read::read_ldap(l, password.as_deref().map(str::trim), ca.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            Ok((rows, vec![]))
        }
        ReaderType::Sql => {
            let s = reader.sql.as_ref().ok_or("reader.sql is missing")?;
            let dsn = secret(secrets_dir, &s.dsn_ref, "reader.sql.dsnRef")?;
            let rows = read::read_sql(dsn.trim(), &s.query)
                .await
                .map_err(|e| e.to_string())?;
            Ok((rows, vec![]))
        }
    }
}
