//! `ImportSource`: an upstream list of people (CSV, LDAP, SQL) turned into Persons and Accounts,
//! in the spirit of the UCS@school import.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// Which reader fetches the upstream list.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ReaderType {
    /// A CSV file from a ConfigMap, a Secret or (file mode) a path.
    #[default]
    Csv,
    /// A search in an upstream LDAP directory.
    Ldap,
    /// A query on a MySQL/MariaDB database (an HR system, or a Slurm accounting database).
    Sql,
}

/// How the list relates to what already exists.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ImportMode {
    /// The list is the whole truth: records gone from it start the removal lifecycle.
    #[default]
    Sync,
    /// Create and modify only; never remove.
    AddModifyOnly,
}

/// Keeps Persons and Accounts in step with an upstream list.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "roster.io",
    version = "v1alpha1",
    kind = "ImportSource",
    plural = "importsources",
    namespaced,
    status = "ImportSourceStatus",
    shortname = "imps",
    category = "roster",
    doc = "An upstream list of people (CSV, LDAP, SQL) that Roster keeps Persons and Accounts in step with.",
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.sourceUID"),
    printcolumn(name = "Reader", type_ = "string", json_path = ".spec.reader.type"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Last-Run",
        type_ = "date",
        json_path = ".status.lastRun.finishedAt"
    ),
    printcolumn(
        name = "Errors",
        type_ = "integer",
        json_path = ".status.lastRun.errors",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ImportSourceSpec {
    /// Identifies the upstream source; every imported identity is keyed by
    /// (sourceUID, recordUID). Immutable.
    #[serde(rename = "sourceUID")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9._:-]+$"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("sourceUID is immutable"))]
    pub source_uid: String,
    /// Where the records come from.
    pub reader: Reader,
    /// Source column (or attribute) → Roster field (`givenName`, `familyName`, `email`,
    /// `institute`, `username`, `projects`, `validUntil`, `action`, …; `__ignore` drops it).
    #[schemars(extend("maxProperties" = 128, "additionalProperties" = {"type": "string", "maxLength": 64}))]
    pub mapping: BTreeMap<String, String>,
    /// Template of the stable record key, e.g. `<employeeNumber>`.
    #[serde(rename = "recordUID")]
    #[schemars(length(min = 1, max = 256))]
    pub record_uid: String,
    /// How usernames are generated for new records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_scheme: Option<UsernameScheme>,
    /// How e-mail addresses are generated when the source has none, e.g.
    /// `<firstname:umlauts,lower>.<lastname:umlauts,lower>@example.org`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub email_scheme: Option<String>,
    /// Values for fields the source does not provide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ImportDefaults>,
    /// `Sync` (the list is the whole truth) or `AddModifyOnly`.
    #[serde(default)]
    pub mode: ImportMode,
    /// Grace periods for records that disappeared (Sync mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period: Option<DeletionGracePeriod>,
    /// Compute and report everything, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Bad rows skipped and reported; with more than this many the run aborts before any write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    pub tolerated_errors: Option<i64>,
    /// Stop the run before any removal when more would be removed than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deletions: Option<MaxDeletions>,
    /// How often the source is read (e.g. `1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub interval: Option<String>,
}

/// The reader and its settings; exactly the block named by `type` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("(self.type == 'Csv') == has(self.csv)").message("reader.csv is required exactly when reader.type is Csv"),
    validation = kube::core::Rule::new("(self.type == 'Ldap') == has(self.ldap)").message("reader.ldap is required exactly when reader.type is Ldap"),
    validation = kube::core::Rule::new("(self.type == 'Sql') == has(self.sql)").message("reader.sql is required exactly when reader.type is Sql")
)]
pub struct Reader {
    /// `Csv`, `Ldap` or `Sql`.
    #[serde(rename = "type")]
    pub type_: ReaderType,
    /// CSV settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<CsvReader>,
    /// LDAP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapReader>,
    /// SQL settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlReader>,
}

/// A CSV file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.configMapRef), has(self.secretRef), has(self.path)].filter(x, x).size() == 1")
    .message("a CSV reader needs exactly one of configMapRef, secretRef or path"))]
pub struct CsvReader {
    /// A key of a ConfigMap in this namespace holding the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
    /// A key of a Secret in this namespace holding the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,
    /// A file path (file mode only), relative to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// Field delimiter; detected from the header when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1))]
    pub delimiter: Option<String>,
    /// Delimiter between list items inside a cell (e.g. several projects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1))]
    pub list_delimiter: Option<String>,
    /// Number of header lines; the last one names the columns. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub header_lines: Option<i32>,
}

/// A search in an upstream directory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LdapReader {
    /// `ldap://` or `ldaps://` URL of the upstream directory.
    #[schemars(length(max = 1024), pattern(r"^ldaps?://"))]
    pub url: String,
    /// Bind DN; anonymous when absent.
    #[serde(rename = "bindDN", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub bind_dn: Option<String>,
    /// The bind password, from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_password_ref: Option<KeyRef>,
    /// Use StartTLS on an `ldap://` URL.
    #[serde(default, rename = "startTLS")]
    pub start_tls: bool,
    /// CA certificate (PEM) to verify the server, from a Secret or ConfigMap key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<KeyRef>,
    /// Search base.
    #[serde(rename = "baseDN")]
    #[schemars(length(min = 1, max = 1024))]
    pub base_dn: String,
    /// Search filter; default `(objectClass=*)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub filter: Option<String>,
}

/// A query on MySQL/MariaDB.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqlReader {
    /// The DSN (`mysql://user:password@host:port/db`), from a Secret key.
    pub dsn_ref: KeyRef,
    /// The query; each result column is a source column for `mapping`.
    #[schemars(length(min = 1, max = 65536))]
    pub query: String,
}

/// How usernames are made for new records.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsernameScheme {
    /// The scheme, e.g. `<:umlauts><:lower><firstname>[0].<lastname>[COUNTER2]`.
    #[schemars(length(min = 1, max = 256))]
    pub template: String,
    /// Cut generated names to this length (before the counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub max_length: Option<i32>,
}

/// Values for fields the source does not provide.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportDefaults {
    /// Projects (in this namespace) every imported account joins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(max = 253), pattern(OBJECT_NAME_PATTERN))
    )]
    pub projects: Vec<String>,
    /// Login shell of imported accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(PATH_PATTERN))]
    pub login_shell: Option<String>,
    /// Institute of imported people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(TEXT_PATTERN))]
    pub institute: Option<String>,
    /// Validity of imported accounts from the import date (e.g. `365d`), when the source has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub validity: Option<String>,
}

/// Grace periods for records gone from the source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionGracePeriod {
    /// Days from disappearance to deactivation (0: at once).
    #[serde(default)]
    #[schemars(range(min = 0, max = 3650))]
    pub deactivation: i32,
    /// Days from disappearance to purge; `purgeAt = max(goneAt + deletion, deactivatedAt)`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 36500))]
    pub deletion: i32,
}

/// The deletion guard of one run; either limit trips it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaxDeletions {
    /// At most this many removals per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub count: Option<i64>,
    /// At most this percentage of the source's identities per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,
}

/// What Roster observed about an ImportSource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSourceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready`, `Invalid`, `Guarded`, `SourceUnreachable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ImportRun>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Time>,
    /// The value of the `roster.io/run-requested` annotation the last run answered (a manual
    /// trigger: `roster import run NAME` sets the annotation to a new value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub last_trigger: Option<String>,
}

/// Summary of one import run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportRun {
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Whether it was a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Records read.
    #[serde(default)]
    pub records: i64,
    /// Identities created.
    #[serde(default)]
    pub created: i64,
    /// Identities modified.
    #[serde(default)]
    pub modified: i64,
    /// Identities deactivated.
    #[serde(default)]
    pub deactivated: i64,
    /// Identities given a purge date.
    #[serde(default)]
    pub scheduled_for_purge: i64,
    /// Identities reactivated.
    #[serde(default)]
    pub reactivated: i64,
    /// Identities unchanged.
    #[serde(default)]
    pub unchanged: i64,
    /// Rows that failed: nothing of them was imported.
    #[serde(default)]
    pub errors: i64,
    /// Rows imported with a problem (an e-mail address the scheme could not give).
    #[serde(default)]
    pub warnings: i64,
    /// The first failed rows (row number and message); the full list is in the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub error_samples: Vec<RowError>,
    /// The ConfigMap holding the report of changed and failed rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub report: Option<String>,
}

/// One failed row.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RowError {
    /// Row number in the source (1 = first data row).
    pub row: i64,
    /// What was wrong.
    #[schemars(length(max = 1024))]
    pub message: String,
}
