//! The configuration file (`--config`, a ConfigMap in the chart). Secrets are referenced as
//! files or environment variables and never appear in the file itself.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::parse_duration;

mod check;
use check::between;
pub use check::check_home_template;

/// A duration of the configuration (`90d`, `24h`, `30m`, `45s`), parsed once when the file is
/// read. An invalid one is a problem of the file (`roster config check`; [`Config::parse`]
/// refuses it), so a loaded configuration only holds valid ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    text: String,
    parsed: Result<std::time::Duration, String>,
}

impl Period {
    pub fn get(&self) -> std::time::Duration {
        self.parsed.clone().unwrap_or_default()
    }

    /// As a signed duration, for arithmetic on instants.
    pub fn signed(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(i64::try_from(self.get().as_secs()).unwrap_or(i64::MAX))
    }

    /// Why the text is not a duration.
    pub fn problem(&self) -> Option<&str> {
        self.parsed.as_ref().err().map(String::as_str)
    }
}

impl From<&str> for Period {
    fn from(text: &str) -> Period {
        Period {
            text: text.to_string(),
            parsed: parse_duration(text).map_err(|e| e.to_string()),
        }
    }
}

/// A period is written as the text it was read from (`90d`), so a configuration serialized by
/// [`Config::to_yaml`] reads back to itself.
impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Period, D::Error> {
        Ok(Period::from(String::deserialize(d)?.as_str()))
    }
}

/// The whole configuration.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Names this installation in every entry it owns (`rosterOwner`), so a file-managed and an
    /// operator-managed installation never touch each other's entries.
    pub manager_id: String,
    /// The directory.
    pub ldap: LdapConfig,
    /// uidNumbers Roster allocates from.
    pub uid_range: IdRange,
    /// gidNumbers Roster allocates from.
    pub gid_range: IdRange,
    /// Defaults for accounts.
    #[serde(default)]
    pub defaults: Defaults,
    /// Grace periods of the lifecycle.
    #[serde(default)]
    pub grace_periods: GracePeriods,
    /// The mass-deactivation guard.
    #[serde(default)]
    pub guard: GuardConfig,
    /// Guests: service policy per type and the expiry notice.
    #[serde(default)]
    pub guests: GuestsConfig,
    /// Notices to people and project leaders; absent: none (conditions only).
    #[serde(default)]
    pub notices: Option<NoticesConfig>,
    /// Adoption of entries that existed before Roster.
    #[serde(default)]
    pub adoption: AdoptionConfig,
    /// Operator mode (`roster run`).
    #[serde(default)]
    pub operator: OperatorConfig,
    /// Slurm accounting; absent: Roster leaves Slurm alone.
    #[serde(default)]
    pub slurm: Option<SlurmConfig>,
    /// The Gold allocation manager; absent: Roster leaves Gold alone.
    #[serde(default)]
    pub gold: Option<GoldConfig>,
    /// Where the file was read from; relative paths in it are resolved against its directory.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// How to reach the directory and where Roster keeps its entries.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port`, `ldaps://host:port` or `ldapi://…`.
    pub uri: String,
    /// The DN Roster binds as.
    #[serde(rename = "bindDN")]
    pub bind_dn: String,
    /// A file whose content (trailing newline ignored) is the bind password.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// An environment variable holding the bind password.
    #[serde(default)]
    pub bind_password_env: Option<String>,
    /// The directory's suffix.
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    /// Where accounts live; default `ou=people,<baseDN>`.
    #[serde(rename = "peopleDN", default)]
    pub people_dn: Option<String>,
    /// Where groups live; default `ou=groups,<baseDN>`.
    #[serde(rename = "groupsDN", default)]
    pub groups_dn: Option<String>,
    /// Where tombstones live; default `ou=tombstones,<baseDN>`.
    #[serde(rename = "tombstonesDN", default)]
    pub tombstones_dn: Option<String>,
    /// Where counters live; default `ou=counters,<baseDN>`.
    #[serde(rename = "countersDN", default)]
    pub counters_dn: Option<String>,
    /// Transport security.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Seconds to wait for a connection or an answer.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Page size of bulk searches.
    #[serde(default = "default_page_size")]
    pub page_size: i32,
}

fn default_timeout() -> u64 {
    10
}
fn default_page_size() -> i32 {
    500
}

/// TLS to the directory. The server certificate is always verified.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// `none`, `startTLS` or `ldaps`.
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the CA(s) that sign the server certificate; default: the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The transport security mode.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain LDAP (only sensible on loopback or ldapi).
    #[default]
    #[serde(rename = "none")]
    None,
    /// StartTLS on an `ldap://` connection.
    #[serde(rename = "startTLS")]
    StartTls,
    /// TLS from the start (`ldaps://`).
    #[serde(rename = "ldaps")]
    Ldaps,
}

/// An inclusive range of POSIX ids.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    /// First id Roster may allocate.
    pub min: u32,
    /// Last id Roster may allocate.
    pub max: u32,
}

impl IdRange {
    pub fn contains(&self, id: u32) -> bool {
        (self.min..=self.max).contains(&id)
    }
}

/// Which group is an account's primary group.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PrimaryGroup {
    /// A personal group with gid = uid, named like the account.
    #[default]
    Personal,
    /// The group of the account's default project.
    DefaultProject,
}

/// Defaults for accounts.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// Login shell when an Account names none.
    #[serde(default = "default_shell")]
    pub login_shell: String,
    /// Home directory template; `{username}` is replaced.
    #[serde(default = "default_home")]
    pub home_directory: String,
    /// `Personal` or `DefaultProject`.
    #[serde(default)]
    pub primary_group: PrimaryGroup,
}

fn default_shell() -> String {
    "/bin/bash".into()
}
fn default_home() -> String {
    "/home/{username}".into()
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            login_shell: default_shell(),
            home_directory: default_home(),
            primary_group: PrimaryGroup::default(),
        }
    }
}

/// Grace periods (durations such as `90d`) per kind.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GracePeriods {
    /// From removal to purge of an Account.
    #[serde(default = "default_account_purge")]
    pub account_purge_after: Period,
    /// From removal to purge of a Project.
    #[serde(default = "default_account_purge")]
    pub project_purge_after: Period,
    /// Shortest per-object `purgeAfter` override accepted.
    #[serde(default = "default_min_purge")]
    pub min_purge_after: Period,
    /// Longest per-object `purgeAfter` override accepted.
    #[serde(default = "default_max_purge")]
    pub max_purge_after: Period,
    /// How long before `validUntil` the `Expiring` condition and Event appear.
    #[serde(default = "default_warn")]
    pub expiry_warning: Period,
}

fn default_account_purge() -> Period {
    Period::from("90d")
}
fn default_min_purge() -> Period {
    Period::from("0d")
}
fn default_max_purge() -> Period {
    Period::from("730d")
}
fn default_warn() -> Period {
    Period::from("14d")
}

impl Default for GracePeriods {
    fn default() -> Self {
        GracePeriods {
            account_purge_after: default_account_purge(),
            project_purge_after: default_account_purge(),
            min_purge_after: default_min_purge(),
            max_purge_after: default_max_purge(),
            expiry_warning: default_warn(),
        }
    }
}

/// The mass-deactivation guard (DESIGN.md §5.5). Either limit trips it.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardConfig {
    /// At most this many removal-caused deactivations/purges per window.
    #[serde(default = "default_guard_count")]
    pub max_count: Option<u32>,
    /// At most this percentage of managed accounts per window.
    #[serde(default = "default_guard_percent")]
    pub max_percent: Option<u8>,
    /// The window the limits apply to.
    #[serde(default = "default_guard_window")]
    pub window: Period,
}

fn default_guard_count() -> Option<u32> {
    Some(25)
}
fn default_guard_percent() -> Option<u8> {
    Some(10)
}
fn default_guard_window() -> Period {
    Period::from("24h")
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_count: default_guard_count(),
            max_percent: default_guard_percent(),
            window: default_guard_window(),
        }
    }
}

/// Service policy of one guest type, relative to `validUntil`.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestPolicyConfig {
    /// Logins keep working this long after `validUntil`.
    pub login_grace: Period,
    /// The account is purged this long after `validUntil` (at least `loginGrace`).
    pub purge_after: Period,
}

/// Guests (sponsored identities).
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestsConfig {
    /// Defaults for `Personal` guests.
    #[serde(default = "default_personal_policy")]
    pub personal: GuestPolicyConfig,
    /// Defaults for `Technical` guests.
    #[serde(default = "default_technical_policy")]
    pub technical: GuestPolicyConfig,
    /// Upper bound of a guest's own `policy.loginGrace`.
    #[serde(default = "default_max_login_grace")]
    pub max_login_grace: Period,
    /// Upper bound of a guest's own `policy.purgeAfter`.
    #[serde(default = "default_max_guest_purge")]
    pub max_purge_after: Period,
    /// How long before `validUntil` the expiry notice goes out (condition, Event, e-mail).
    #[serde(default = "default_guest_notice")]
    pub notice: Period,
    /// Where the notice e-mail goes out (operator mode); absent: condition and Event only.
    #[serde(default)]
    pub smtp: Option<crate::notify::SmtpConfig>,
}

fn default_personal_policy() -> GuestPolicyConfig {
    GuestPolicyConfig {
        login_grace: "30d".into(),
        purge_after: "60d".into(),
    }
}
fn default_technical_policy() -> GuestPolicyConfig {
    GuestPolicyConfig {
        login_grace: "0d".into(),
        purge_after: "30d".into(),
    }
}
fn default_max_login_grace() -> Period {
    Period::from("90d")
}
fn default_max_guest_purge() -> Period {
    Period::from("365d")
}
fn default_guest_notice() -> Period {
    Period::from("14d")
}

impl Default for GuestsConfig {
    fn default() -> Self {
        GuestsConfig {
            personal: default_personal_policy(),
            technical: default_technical_policy(),
            max_login_grace: default_max_login_grace(),
            max_purge_after: default_max_guest_purge(),
            notice: default_guest_notice(),
            smtp: None,
        }
    }
}

/// Notices to people and project leaders (`crate::notice`): before a `validUntil` and when a
/// deactivation takes effect, once per transition.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoticesConfig {
    /// How long before an Account's or Project's `validUntil` the notice goes out (and how long
    /// after a deactivation it is still told: an older one is history).
    #[serde(default = "default_notice_before")]
    pub before: Period,
    /// The mail relay; absent: `guests.smtp`. Without either, no notices go out.
    #[serde(default)]
    pub smtp: Option<crate::notify::SmtpConfig>,
    /// The site's wording; placeholders `{name}`, `{username}`, `{project}`, `{validUntil}`,
    /// `{reason}` (`{{` for a literal brace).
    #[serde(default)]
    pub templates: NoticeTemplates,
}

fn default_notice_before() -> Period {
    Period::from("14d")
}

/// The four notices' subjects and bodies.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoticeTemplates {
    #[serde(default = "default_account_expiring")]
    pub account_expiring: NoticeTemplate,
    #[serde(default = "default_account_deactivated")]
    pub account_deactivated: NoticeTemplate,
    #[serde(default = "default_project_expiring")]
    pub project_expiring: NoticeTemplate,
    #[serde(default = "default_project_deactivated")]
    pub project_deactivated: NoticeTemplate,
}

/// A notice's subject and body.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NoticeTemplate {
    pub subject: String,
    pub body: String,
}

/// The placeholders a notice template may use (`crate::notice` fills them).
pub const NOTICE_PLACEHOLDERS: &[&str] = &["name", "username", "project", "validUntil", "reason"];

impl NoticeTemplate {
    /// The placeholders of the subject and body that [`NOTICE_PLACEHOLDERS`] does not know.
    pub fn unknown_placeholders(&self) -> Vec<String> {
        let mut out = vec![];
        for text in [&self.subject, &self.body] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find('{') {
                rest = &rest[i..];
                if let Some(r) = rest.strip_prefix("{{") {
                    rest = r;
                    continue;
                }
                match rest.find('}') {
                    Some(j) => {
                        let name = &rest[1..j];
                        if !NOTICE_PLACEHOLDERS.contains(&name) {
                            out.push(name.to_string());
                        }
                        rest = &rest[j + 1..];
                    }
                    None => break,
                }
            }
        }
        out
    }
}

fn template(subject: &str, body: &str) -> NoticeTemplate {
    NoticeTemplate {
        subject: subject.into(),
        body: body.into(),
    }
}
fn default_account_expiring() -> NoticeTemplate {
    template(
        "Your account {username} expires on {validUntil}",
        "Dear {name},\n\nyour account {username} expires on {validUntil}: logins and jobs are refused afterwards. If you still need it, ask your project leader or the administrators to extend it.\n",
    )
}
fn default_account_deactivated() -> NoticeTemplate {
    template(
        "Your account {username} is deactivated",
        "Dear {name},\n\nyour account {username} is deactivated ({reason}): logins and jobs are refused. Ask the administrators if this is a mistake.\n",
    )
}
fn default_project_expiring() -> NoticeTemplate {
    template(
        "Project {project} ends on {validUntil}",
        "Dear {name},\n\nthe project {project}, which you lead, ends on {validUntil}: its jobs are refused afterwards. Extend its validUntil if it goes on.\n",
    )
}
fn default_project_deactivated() -> NoticeTemplate {
    template(
        "Project {project} is deactivated",
        "Dear {name},\n\nthe project {project}, which you lead, is deactivated ({reason}): its jobs are refused.\n",
    )
}

impl Default for NoticeTemplates {
    fn default() -> Self {
        NoticeTemplates {
            account_expiring: default_account_expiring(),
            account_deactivated: default_account_deactivated(),
            project_expiring: default_project_expiring(),
            project_deactivated: default_project_deactivated(),
        }
    }
}

impl NoticeTemplates {
    /// The template of a notice kind (`accountExpiring` …).
    pub fn get(&self, kind: &str) -> &NoticeTemplate {
        match kind {
            "accountExpiring" => &self.account_expiring,
            "accountDeactivated" => &self.account_deactivated,
            "projectExpiring" => &self.project_expiring,
            _ => &self.project_deactivated,
        }
    }

    /// Every template with its key.
    pub fn all(&self) -> [(&'static str, &NoticeTemplate); 4] {
        [
            ("accountExpiring", &self.account_expiring),
            ("accountDeactivated", &self.account_deactivated),
            ("projectExpiring", &self.project_expiring),
            ("projectDeactivated", &self.project_deactivated),
        ]
    }
}

impl Config {
    /// The relay notices go through: `notices.smtp`, else `guests.smtp`.
    pub fn notice_smtp(&self) -> Option<&crate::notify::SmtpConfig> {
        let n = self.notices.as_ref()?;
        n.smtp.as_ref().or(self.guests.smtp.as_ref())
    }
}

/// Adoption of existing entries: needs this switch *and* the `roster.io/adopt` annotation.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdoptionConfig {
    /// Allow adoption at all.
    #[serde(default)]
    pub enabled: bool,
    /// Namespaces whose objects may adopt; empty means none.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// Slurm accounting: where sacctmgr and the accounting database are.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlurmConfig {
    /// The clusters Roster manages (one slurmdbd may serve several); a Project without
    /// `slurm.clusters` lives on all of them.
    pub clusters: Vec<String>,
    /// The slurm.conf sacctmgr reads (`SLURM_CONF`); default: sacctmgr's own default.
    #[serde(default)]
    pub slurm_conf: Option<PathBuf>,
    /// The sacctmgr binary.
    #[serde(default = "default_sacctmgr")]
    pub sacctmgr: String,
    /// A file holding the read-only DSN of the accounting database
    /// (`mysql://user:password@host:port/slurm_acct_db`) for bulk observation.
    #[serde(default)]
    pub database_url_file: Option<PathBuf>,
    /// An environment variable holding that DSN instead.
    #[serde(default)]
    pub database_url_env: Option<String>,
    /// The parent of Roster's Slurm accounts.
    #[serde(default = "default_root_account")]
    pub root_account: String,
    /// Most names per sacctmgr call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Seconds one sacctmgr call may take.
    #[serde(default = "default_sacctmgr_timeout")]
    pub timeout_seconds: u64,
}

/// The Gold allocation manager (SSSRMAP over plain TCP).
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GoldConfig {
    /// Gold server host.
    pub host: String,
    /// Gold server port.
    #[serde(default = "default_gold_port")]
    pub port: u16,
    /// The Gold user Roster acts as (needs Gold roles for users, projects and deposits).
    #[serde(default = "default_gold_actor")]
    pub actor: String,
    /// A file whose first line is the shared secret (the server's `auth_key`).
    #[serde(default)]
    pub auth_key_file: Option<PathBuf>,
    /// An environment variable holding that secret instead.
    #[serde(default)]
    pub auth_key_env: Option<String>,
    /// Seconds one request may take (connect, send, reply).
    #[serde(default = "default_gold_timeout")]
    pub timeout_seconds: u64,
    /// Attempts per request when Gold is unreachable or times out.
    #[serde(default = "default_gold_attempts")]
    pub attempts: u32,
    /// Requests in flight at once.
    #[serde(default = "default_gold_concurrency")]
    pub concurrency: usize,
}

fn default_gold_port() -> u16 {
    7112
}
fn default_gold_actor() -> String {
    "root".into()
}
fn default_gold_timeout() -> u64 {
    30
}
fn default_gold_attempts() -> u32 {
    3
}
fn default_gold_concurrency() -> usize {
    8
}

impl GoldConfig {
    /// The shared secret (read now; never logged): the first line of the file or the variable.
    pub fn auth_key(&self, config: &Config) -> Result<String, ConfigError> {
        let text = config
            .secret(
                self.auth_key_file.as_deref(),
                self.auth_key_env.as_deref(),
                "gold.authKey",
            )?
            .ok_or_else(|| {
                ConfigError::Secret("gold.authKeyFile (or gold.authKeyEnv) is required".into())
            })?;
        let key = text.lines().next().unwrap_or("").to_string();
        if key.is_empty() || key.len() > 80 || !key.is_ascii() {
            return Err(ConfigError::Secret(
                "the Gold auth key must be one line of 1 to 80 ASCII characters".into(),
            ));
        }
        Ok(key)
    }
}

fn default_sacctmgr() -> String {
    "sacctmgr".into()
}
fn default_root_account() -> String {
    "root".into()
}
fn default_batch() -> usize {
    1000
}
fn default_sacctmgr_timeout() -> u64 {
    120
}

impl SlurmConfig {
    /// The read-only DSN, if one is configured (read now; never logged).
    pub fn database_url(&self, config: &Config) -> Result<Option<String>, ConfigError> {
        let url = config.secret(
            self.database_url_file.as_deref(),
            self.database_url_env.as_deref(),
            "slurm.databaseUrl",
        )?;
        Ok(url.map(|u| u.trim().to_string()))
    }
}

/// Operator mode settings.
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// How often everything is compared with the directory even without changes, to find and
    /// repair drift.
    #[serde(default = "default_resync")]
    pub resync_interval: Period,
    /// The Lease for leader election.
    #[serde(default = "default_lease_name")]
    pub lease_name: String,
    /// Its namespace; default the `POD_NAMESPACE` environment variable, else `default`.
    #[serde(default)]
    pub lease_namespace: Option<String>,
    /// Seconds a leader holds the Lease without renewing it.
    #[serde(default = "default_lease_seconds")]
    pub lease_duration_seconds: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: String,
}

fn default_resync() -> Period {
    Period::from("5m")
}
fn default_lease_name() -> String {
    "roster-leader".into()
}
fn default_lease_seconds() -> u64 {
    15
}
fn default_metrics_address() -> String {
    "0.0.0.0:8080".into()
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            resync_interval: default_resync(),
            lease_name: default_lease_name(),
            lease_namespace: None,
            lease_duration_seconds: default_lease_seconds(),
            metrics_address: default_metrics_address(),
        }
    }
}

/// One problem in a configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `ldap.bindDN`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("config {path} is invalid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("cannot read the LDAP bind password: {0}")]
    Secret(String),
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, base_dir).map_err(|e| match e {
            ConfigError::Yaml { message, .. } => ConfigError::Yaml {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: PathBuf::new(),
            problems,
        };
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        if !value.is_object() {
            return Err(invalid(vec![Problem {
                key: "(top level)".into(),
                message: "the configuration must be a mapping".into(),
            }]));
        }
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            invalid(vec![structural_problem(&path, &inner)])
        })?;
        config.base_dir = base_dir;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }

    /// The effective configuration as YAML: every key with the value in force, defaults
    /// included (`roster config show`). It parses back to the same configuration, so the tests
    /// build their files from these types rather than by hand.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a configuration serializes")
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// A secret, read now from `{key}File` (relative to the configuration's directory) or the
    /// variable `{key}Env`; `None` when neither is set. See [`crate::secret::read`].
    pub fn secret(
        &self,
        file: Option<&Path>,
        env: Option<&str>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        crate::secret::read(&self.base_dir, file, env, key).map_err(ConfigError::Secret)
    }

    /// The bind password, read now from its file or environment variable.
    pub fn bind_password(&self) -> Result<String, ConfigError> {
        let password = self.secret(
            self.ldap.bind_password_file.as_deref(),
            self.ldap.bind_password_env.as_deref(),
            "ldap.bindPassword",
        )?;
        password.ok_or_else(|| {
            ConfigError::Secret(
                "neither ldap.bindPasswordFile nor ldap.bindPasswordEnv is set".into(),
            )
        })
    }

    pub fn people_dn(&self) -> String {
        self.ldap
            .people_dn
            .clone()
            .unwrap_or_else(|| format!("ou=people,{}", self.ldap.base_dn))
    }
    pub fn groups_dn(&self) -> String {
        self.ldap
            .groups_dn
            .clone()
            .unwrap_or_else(|| format!("ou=groups,{}", self.ldap.base_dn))
    }
    pub fn tombstones_dn(&self) -> String {
        self.ldap
            .tombstones_dn
            .clone()
            .unwrap_or_else(|| format!("ou=tombstones,{}", self.ldap.base_dn))
    }
    pub fn counters_dn(&self) -> String {
        self.ldap
            .counters_dn
            .clone()
            .unwrap_or_else(|| format!("ou=counters,{}", self.ldap.base_dn))
    }
    /// The DN of the counter entry `cn` (its value escaped: an address's `+` is no RDN's).
    pub fn counter_dn(&self, cn: &str) -> String {
        format!("cn={},{}", ldap3::dn_escape(cn), self.counters_dn())
    }
}

/// Turns serde's complaint into a problem naming the full key.
fn structural_problem(path: &str, message: &str) -> Problem {
    let path = if path == "." { "" } else { path };
    let join = |field: &str| {
        if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = between(message, "missing field `", "`") {
        return Problem {
            key: join(field),
            message: "missing (required)".into(),
        };
    }
    if between(message, "unknown field `", "`").is_some() {
        // serde_path_to_error's path already ends in the unknown key.
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| format!("; expected {e}"))
            .unwrap_or_default();
        return Problem {
            key: path.to_string(),
            message: format!("unknown key{expected}"),
        };
    }
    Problem {
        key: if path.is_empty() {
            "(top level)".into()
        } else {
            path.into()
        },
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
managerId: site-a
ldap:
  uri: ldap://127.0.0.1:389
  bindDN: cn=admin,dc=example,dc=org
  bindPasswordFile: pw
  baseDN: dc=example,dc=org
uidRange: {min: 20000, max: 29999}
gidRange: {min: 20000, max: 29999}
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, PathBuf::from("/etc/roster"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_effective_configuration_parses_back_to_itself() {
        let full = format!(
            "{GOOD}gracePeriods: {{accountPurgeAfter: 45d}}\n\
             guard: {{maxCount: 7, window: 12h}}\n\
             guests:\n  notice: 3d\n  smtp: {{host: relay.example.org, tls: starttls, \
             username: roster, passwordFile: smtp.pw, from: hpc@example.org}}\n\
             slurm: {{clusters: [dev, gpu], databaseUrlFile: db.url}}\n\
             gold: {{host: gold.example.org, port: 7112, authKeyFile: gold.key}}\n"
        );
        let c = parse(&full).unwrap();
        let yaml = c.to_yaml();
        // Periods are written as they were read, defaults are spelled out.
        assert!(yaml.contains("accountPurgeAfter: 45d"), "{yaml}");
        assert!(yaml.contains("notice: 3d"), "{yaml}");
        assert!(yaml.contains("maxPercent: 10"), "{yaml}");
        assert!(yaml.contains("tls: starttls"), "{yaml}");
        let back = parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back, c);
        assert!(!yaml.contains("baseDir"), "{yaml}");
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.people_dn(), "ou=people,dc=example,dc=org");
        assert_eq!(c.defaults.home_directory, "/home/{username}");
        assert_eq!(c.resolve(Path::new("pw")), PathBuf::from("/etc/roster/pw"));
        assert_eq!(c.guard.max_count, Some(25));
    }

    #[test]
    fn a_missing_key_is_named_with_its_path() {
        let p = problems(&GOOD.replace("managerId: site-a\n", ""));
        assert_eq!(p[0].key, "managerId");
        assert!(p[0].message.contains("missing"));
        let p = problems(&GOOD.replace("  bindDN: cn=admin,dc=example,dc=org\n", ""));
        assert_eq!(p[0].key, "ldap.bindDN");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let p = problems(&GOOD.replace("  baseDN:", "  baseDn: x\n  baseDN:"));
        assert_eq!(p[0].key, "ldap.baseDn");
        assert!(p[0].message.contains("unknown key"), "{}", p[0].message);
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let text = GOOD
            .replace("site-a", "Site/A")
            .replace("ldap://127.0.0.1:389", "http://x")
            .replace(
                "{min: 20000, max: 29999}\ngid",
                "{min: 30000, max: 29999}\ngid",
            )
            + "defaults:\n  homeDirectory: /home/../{username}\n";
        let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "managerId",
                "ldap.uri",
                "uidRange",
                "defaults.homeDirectory"
            ]
        );
    }

    #[test]
    fn tls_mode_must_match_the_uri() {
        let p = problems(&(GOOD.to_string() + "").replace(
            "  baseDN: dc=example,dc=org\n",
            "  baseDN: dc=example,dc=org\n  tls: {mode: ldaps}\n",
        ));
        assert_eq!(p[0].key, "ldap.tls.mode");
    }

    #[test]
    fn both_or_no_password_source_is_refused() {
        let p = problems(&GOOD.replace("  bindPasswordFile: pw\n", ""));
        assert_eq!(p[0].key, "ldap.bindPasswordFile");
        let p = problems(&GOOD.replace(
            "  bindPasswordFile: pw\n",
            "  bindPasswordFile: pw\n  bindPasswordEnv: PW\n",
        ));
        assert_eq!(p[0].key, "ldap.bindPasswordEnv");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let p = problems(&GOOD.replace(
            "{min: 20000, max: 29999}\ngid",
            "{min: lots, max: 29999}\ngid",
        ));
        assert_eq!(p[0].key, "uidRange.min");
    }

    #[test]
    fn yaml_errors_are_reported_as_such() {
        assert!(matches!(
            parse("managerId: [\n"),
            Err(ConfigError::Yaml { .. })
        ));
    }
}
