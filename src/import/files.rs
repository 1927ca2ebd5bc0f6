//! File mode: where an ImportSource's records come from without a cluster — a CSV `path`
//! relative to the manifest, and Secrets (a ConfigMap/Secret reference, the LDAP bind
//! password, the SQL DSN) as files `<secrets-dir>/<name>/<key>`.

use std::collections::BTreeMap;
use std::path::Path;

use super::read::{self, Row, RowError};
use super::source::Secrets;
use crate::api::{ImportSource, KeyRef};
use crate::site::Key;

/// File mode's references: the manifest's directory, the ConfigMaps declared in the manifests
/// (of the source's namespace), and `--secrets-dir`.
pub struct Files<'a> {
    pub manifest_dir: &'a Path,
    pub secrets_dir: Option<&'a Path>,
    pub config_maps: &'a BTreeMap<Key, BTreeMap<String, String>>,
    pub namespace: &'a str,
}

impl Secrets for Files<'_> {
    /// A ConfigMap declared in the manifests, else `<dir>/<name>/<key>` (a Secret or ConfigMap
    /// as files).
    async fn key(&self, r: &KeyRef, secret: bool, what: &str) -> Result<String, String> {
        if !secret && let Some(data) = self.config_maps.get(&Key::new(self.namespace, &r.name)) {
            return data.get(&r.key).cloned().ok_or_else(|| {
                format!(
                    "{what} refers to key {} of ConfigMap {}/{}, which has {}",
                    r.key,
                    self.namespace,
                    r.name,
                    data.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            });
        }
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
    config_maps: &BTreeMap<Key, BTreeMap<String, String>>,
) -> Result<(Vec<Row>, Vec<RowError>), String> {
    let files = Files {
        manifest_dir,
        secrets_dir,
        config_maps,
        namespace: src.metadata.namespace.as_deref().unwrap_or_default(),
    };
    super::source::read(src, &files).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example site's import reads its CSV from the ConfigMap declared beside it, as the
    /// operator reads it from the cluster: the same manifests import the same people.
    #[tokio::test]
    async fn a_config_map_in_the_manifests_is_what_config_map_ref_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site");
        let site = crate::site::load(&[root], None).expect("the example site loads");
        let (src, dir) = &site.imports[&Key::new("physics", "hr")];
        let (rows, errors) = read_source(src, dir, None, &site.config_maps)
            .await
            .expect("the ConfigMap is found");
        assert_eq!((rows.len(), errors.len()), (20, 0));
        assert_eq!(rows[0].fields["first_name"], "Jürgen");
        // Another namespace's ConfigMap of that name is not this source's.
        let mut elsewhere = site.config_maps.clone();
        let data = elsewhere.remove(&Key::new("physics", "hr-export")).unwrap();
        elsewhere.insert(Key::new("chemistry", "hr-export"), data);
        let e = read_source(src, dir, None, &elsewhere).await.unwrap_err();
        assert!(e.contains("pass --secrets-dir"), "{e}");
        // A key the ConfigMap lacks is named with the keys it has.
        let mut other = src.clone();
        other
            .spec
            .reader
            .csv
            .as_mut()
            .unwrap()
            .config_map_ref
            .as_mut()
            .unwrap()
            .key = "x.csv".into();
        let e = read_source(&other, dir, None, &site.config_maps)
            .await
            .unwrap_err();
        assert!(
            e.contains("key x.csv of ConfigMap physics/hr-export, which has hr-export.csv"),
            "{e}"
        );
    }
}
