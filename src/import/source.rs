//! Reading an ImportSource's records, the same in both modes: a CSV (a `path` in file mode, a
//! ConfigMap or Secret key), an LDAP search or an SQL query. Where the referenced Secrets and
//! ConfigMaps come from is the mode's own ([`Secrets`]): files `<secrets-dir>/<name>/<key>` in
//! file mode, the Kubernetes API in the operator. An unreachable source is an error, never an
//! empty list.

use super::read::{self, Row, RowError};
use crate::api::{ImportSource, KeyRef, ReaderType};

/// Where a source's references are resolved.
pub trait Secrets {
    /// A key of a Secret (`secret`) or ConfigMap in the source's namespace, as text; `what`
    /// names the field that refers to it, for the error.
    fn key(
        &self,
        r: &KeyRef,
        secret: bool,
        what: &str,
    ) -> impl std::future::Future<Output = Result<String, String>> + Send;

    /// A CSV file named by `reader.csv.path` (file mode: relative to the manifest).
    fn csv_path(&self, path: &str) -> Result<String, String>;
}

/// The source's rows (and the rows it could not read).
pub async fn read<S: Secrets + Sync>(
    src: &ImportSource,
    secrets: &S,
) -> Result<(Vec<Row>, Vec<RowError>), String> {
    let reader = &src.spec.reader;
    match reader.type_ {
        ReaderType::Csv => {
            let csv = reader.csv.as_ref().ok_or("reader.csv is missing")?;
            let text = match (&csv.path, &csv.config_map_ref, &csv.secret_ref) {
                (Some(p), _, _) => secrets.csv_path(p)?,
                (None, Some(r), _) => secrets.key(r, false, "reader.csv").await?,
                (None, None, Some(r)) => secrets.key(r, true, "reader.csv").await?,
                (None, None, None) => {
                    return Err("reader.csv needs path, configMapRef or secretRef".into());
                }
            };
            read::parse_csv(&text, csv).map_err(|e| e.to_string())
        }
        ReaderType::Ldap => {
            let l = reader.ldap.as_ref().ok_or("reader.ldap is missing")?;
            let password = match &l.bind_password_ref {
                Some(r) => Some(secrets.key(r, true, "reader.ldap.bindPasswordRef").await?),
                None => None,
            };
            let ca = match &l.ca_ref {
                Some(r) => Some(secrets.key(r, true, "reader.ldap.caRef").await?),
                None => None,
            };
            let rows = read::read_ldap(l, password.as_deref().map(str::trim), ca.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            Ok((rows, vec![]))
        }
        ReaderType::Sql => {
            let s = reader.sql.as_ref().ok_or("reader.sql is missing")?;
            let dsn = secrets.key(&s.dsn_ref, true, "reader.sql.dsnRef").await?;
            let rows = read::read_sql(dsn.trim(), &s.query)
                .await
                .map_err(|e| e.to_string())?;
            Ok((rows, vec![]))
        }
    }
}
