//! E-mail notices (a guest's coming expiry, …) through the site's SMTP relay, with `lettre`.
//!
//! [`Mailer`] sends one plain-text message per call: `STARTTLS` required (`tls: starttls`, the
//! submission port 587), TLS from the first byte (`tls: tls`, port 465) or plain SMTP to a local
//! relay (`tls: none`, port 25, the default). The relay's certificate is always verified, against
//! `caFile` when given, else the system's roots; a certificate that does not verify ends the
//! connection before anything else is sent. With `username`, Roster authenticates (PLAIN or
//! LOGIN, whichever the relay offers) with the password read from `passwordFile` or
//! `passwordEnv` when the message is sent — never over an unencrypted connection (the config
//! check refuses `tls: none` with credentials). Every step has the configured timeout.
//!
//! Everything that ends up in a header (addresses, the subject) is checked before connecting, so
//! a CR or LF can never inject a header or an SMTP command. The message is
//! `text/plain; charset=utf-8`, `8bit` when every line is short, else quoted-printable or base64; a
//! non-ASCII subject travels as RFC 2047 encoded words.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType, MIME_VERSION_1_0};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

/// How to reach the SMTP relay (the configuration's `guests.smtp`).
#[derive(Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's host name or IP address; the name its certificate must carry.
    pub host: String,
    /// The relay's port (default: 25 with `tls: none`, 587 with `starttls`, 465 with `tls`).
    #[serde(default)]
    pub port: Option<u16>,
    /// `none` (a local relay), `starttls` (required, never a silent fallback) or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// PEM file of the CA(s) that sign the relay's certificate; default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The user to authenticate as; its password comes from `passwordFile` or `passwordEnv`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (a mounted Secret; a trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// … or an environment variable holding it.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The sender address (`local@domain`), used for `MAIL FROM` and the `From:` header.
    pub from: String,
    /// Seconds allowed for connecting and for each command's reply (default 10).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// The transport security to the relay.
#[derive(Deserialize, serde::Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP: only for a relay on the same host or in the same cluster.
    #[default]
    None,
    /// Plain, then `STARTTLS`, which the relay must offer.
    Starttls,
    /// TLS from the start (SMTPS).
    Tls,
}

impl SmtpConfig {
    /// The configured port, or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }
}

fn default_timeout_seconds() -> u64 {
    10
}

/// Why a notice could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// An address that is not a plain `local@domain`.
    #[error("{field}: {value:?} is not an e-mail address of the form local@domain")]
    InvalidAddress {
        /// Which address (`from`, `to`).
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A CR or LF where a header value goes: refused before connecting.
    #[error("{field} contains a line break (CR or LF): refused, it would inject mail headers")]
    HeaderInjection {
        /// Which field (`subject`, `from`, `to`).
        field: &'static str,
    },
    /// Anything else wrong with the input or the settings (no recipients, control characters,
    /// an unreadable CA or password file).
    #[error("{0}")]
    Invalid(String),
    /// The TCP connection could not be made.
    #[error("cannot connect to the SMTP server {addr}: {message}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        message: String,
    },
    /// TLS could not be established: no `STARTTLS` offered, or a certificate that does not
    /// verify. Nothing (no password, no message) was sent.
    #[error("SMTP server {addr}: TLS failed, nothing was sent: {message}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// Why.
        message: String,
    },
    /// The server did not answer in time.
    #[error("SMTP server {addr}: no answer within {limit:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The timeout.
        limit: Duration,
    },
    /// The server answered with an error code (a refused login, sender, recipient or message).
    #[error("SMTP server {addr} refused the notice: {code} {text}")]
    Rejected {
        /// `host:port`.
        addr: String,
        /// The reply code.
        code: String,
        /// The reply text.
        text: String,
    },
    /// Anything else the SMTP exchange ended with (a broken connection, a malformed reply).
    #[error("SMTP server {addr}: {message}")]
    Smtp {
        /// `host:port`.
        addr: String,
        /// What happened.
        message: String,
    },
}

/// An SMTP client for one relay and sender, made from [`SmtpConfig`]. Secrets (the password)
/// are read when a message is sent, so a rotated Secret is used at once.
#[derive(Debug, Clone)]
pub struct Mailer {
    config: SmtpConfig,
    /// Where relative `caFile`/`passwordFile` paths resolve (the configuration file's directory).
    base_dir: PathBuf,
    /// Allowed for connecting and for each reply.
    pub timeout: Duration,
}

static MESSAGE_SEQ: AtomicU64 = AtomicU64::new(0);

impl Mailer {
    /// A mailer for the configured relay; checks the sender address and the settings. Relative
    /// paths resolve against `base_dir`.
    pub fn new(config: &SmtpConfig, base_dir: &Path) -> Result<Mailer, NotifyError> {
        if config.host.trim().is_empty() {
            return Err(NotifyError::Invalid("smtp.host is empty".into()));
        }
        if config.timeout_seconds == 0 {
            return Err(NotifyError::Invalid(
                "smtp.timeoutSeconds must be at least 1".into(),
            ));
        }
        if let Some(problem) = credentials_problem(config) {
            return Err(NotifyError::Invalid(problem));
        }
        check_address("from", &config.from)?;
        Ok(Mailer {
            config: config.clone(),
            base_dir: base_dir.to_path_buf(),
            timeout: Duration::from_secs(config.timeout_seconds),
        })
    }

    /// `host:port` as shown in messages (IPv6 literals in brackets).
    fn addr(&self) -> String {
        let (host, port) = (&self.config.host, self.config.port());
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Sends one plain-text message to every address in `to`. Everything is checked before
    /// connecting (addresses, CR/LF in the subject, the CA and password files); the message
    /// counts as sent once the relay accepted it. Any refused recipient fails the whole send.
    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), NotifyError> {
        crate::telemetry::call(
            "smtp",
            "send",
            self.deliver(to, subject, body),
            Result::is_ok,
        )
        .await
    }

    async fn deliver(&self, to: &[String], subject: &str, body: &str) -> Result<(), NotifyError> {
        let message = compose(&self.config.from, to, subject, body)?;
        let transport = self.transport()?;
        transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    /// The lettre transport: TLS mode and trust, credentials, timeout; a connection per notice
    /// (lettre's pool is not built in: notices are rare, a held connection would go stale).
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
        let c = &self.config;
        let tls = match c.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(self.tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(self.tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.as_str())
            .port(c.port())
            .tls(tls)
            .timeout(Some(self.timeout));
        if let Some(user) = &c.username {
            builder = builder.credentials(Credentials::new(user.clone(), self.password()?));
        }
        Ok(builder.build())
    }

    fn tls_parameters(&self) -> Result<TlsParameters, NotifyError> {
        let mut params = TlsParameters::builder(self.config.host.clone());
        if let Some(ca) = &self.config.ca_file {
            let ca = self.resolve(ca);
            let what = format!("guests.smtp.caFile {}", ca.display());
            let pem = std::fs::read_to_string(&ca)
                .map_err(|e| NotifyError::Invalid(format!("cannot read {what}: {e}")))?;
            // The same checks as the directory's CA file: PEM, at least one usable certificate.
            crate::tls::trusting(&pem, &what).map_err(NotifyError::Invalid)?;
            let cert = Certificate::from_pem(pem.as_bytes())
                .map_err(|e| NotifyError::Invalid(format!("{what}: {e}")))?;
            params = params
                .certificate_store(lettre::transport::smtp::client::CertificateStore::None)
                .add_root_certificate(cert);
        }
        params.build_rustls().map_err(|e| NotifyError::Tls {
            addr: self.addr(),
            message: e.to_string(),
        })
    }

    /// The password, read now from its file or environment variable.
    fn password(&self) -> Result<String, NotifyError> {
        let c = &self.config;
        crate::secret::read(
            &self.base_dir,
            c.password_file.as_deref(),
            c.password_env.as_deref(),
            "guests.smtp.password",
        )
        .map_err(NotifyError::Invalid)?
        .ok_or_else(|| {
            NotifyError::Invalid(
                "guests.smtp.username is set but neither passwordFile nor passwordEnv".into(),
            )
        })
    }

    /// What a failed exchange means, in the relay's words where it gave any.
    fn failed(&self, e: lettre::transport::smtp::Error) -> NotifyError {
        let addr = self.addr();
        if let Some(code) = e.status() {
            let text = e.to_string();
            // lettre says "permanent error (550): text"; keep the relay's text.
            let text = text
                .split_once("): ")
                .map_or(text.as_str(), |(_, t)| t)
                .to_string();
            return NotifyError::Rejected {
                addr,
                code: code.to_string(),
                text,
            };
        }
        if e.is_timeout() {
            return NotifyError::Timeout {
                addr,
                limit: self.timeout,
            };
        }
        let message = chain(&e);
        let sources = || std::iter::successors(std::error::Error::source(&e), |s| s.source());
        // A certificate refused in the handshake, or STARTTLS required and not offered: no
        // command after EHLO/STARTTLS was sent, so neither the password nor the notice.
        let handshake = sources().any(|s| {
            s.downcast_ref::<rustls::Error>().is_some()
                || s.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        });
        let no_starttls = e.is_client() && message.contains("STARTTLS");
        if e.is_tls() || handshake || no_starttls {
            return NotifyError::Tls { addr, message };
        }
        let io = sources().find_map(|s| s.downcast_ref::<std::io::Error>());
        if let Some(io) = io {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::NotFound
            ) {
                return NotifyError::Connect { addr, message };
            }
        }
        NotifyError::Smtp { addr, message }
    }
}

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What is wrong with the credentials settings, if anything (also the config check's words).
pub fn credentials_problem(c: &SmtpConfig) -> Option<String> {
    let secret = c.password_file.is_some() || c.password_env.is_some();
    if c.password_file.is_some() && c.password_env.is_some() {
        return Some("set only one of guests.smtp.passwordFile and guests.smtp.passwordEnv".into());
    }
    match (&c.username, secret) {
        (Some(u), _) if u.is_empty() || u.contains(['\r', '\n']) => {
            Some("guests.smtp.username must be a non-empty single line".into())
        }
        (Some(_), false) => Some(
            "guests.smtp.username needs its password: set passwordFile (a mounted Secret) or passwordEnv".into(),
        ),
        (None, true) => Some("guests.smtp.passwordFile/passwordEnv is set without a username".into()),
        (Some(_), true) if c.tls == SmtpTls::None => Some(
            "guests.smtp.username with tls: none would send the password in clear: use tls: starttls or tls".into(),
        ),
        _ => None,
    }
}

/// Checks that `value` is a plain `local@domain` address: printable ASCII without spaces,
/// brackets, quotes or the other specials in the local part, dot-separated letters, digits and
/// hyphens in the domain, within SMTP's length limits. Display names are not accepted.
pub fn check_address(field: &'static str, value: &str) -> Result<(), NotifyError> {
    if value.contains(['\r', '\n']) {
        return Err(NotifyError::HeaderInjection { field });
    }
    let bad = || NotifyError::InvalidAddress {
        field,
        value: value.to_string(),
    };
    let (local, domain) = value.rsplit_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>[]\\,;:\"@".contains(&b));
    let domain_ok = domain.len() <= 253
        && !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if local_ok && domain_ok && value.len() <= 254 {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A subject may be any text without line breaks or other control characters.
fn check_subject(subject: &str) -> Result<(), NotifyError> {
    if subject.contains(['\r', '\n']) {
        return Err(NotifyError::HeaderInjection { field: "subject" });
    }
    if subject.chars().any(|c| c.is_control() && c != '\t') {
        return Err(NotifyError::Invalid(
            "subject contains a control character".into(),
        ));
    }
    Ok(())
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("localhost", |(_, d)| d)
}

/// The message: checked addresses and subject (nothing reaches a header unchecked), `Date`, a
/// `Message-ID` in the sender's domain, and the body as `8bit` (quoted-printable or base64 when
/// a line is long).
fn compose(from: &str, to: &[String], subject: &str, body: &str) -> Result<Message, NotifyError> {
    check_address("from", from)?;
    if to.is_empty() {
        return Err(NotifyError::Invalid("no recipients".into()));
    }
    for a in to {
        check_address("to", a)?;
    }
    check_subject(subject)?;
    let mailbox = |field: &'static str, a: &str| {
        a.parse::<Mailbox>()
            .map_err(|_| NotifyError::InvalidAddress {
                field,
                value: a.to_string(),
            })
    };
    let message_id = format!(
        "<{}.{}.{}@{}>",
        jiff::Timestamp::now().as_nanosecond(),
        std::process::id(),
        MESSAGE_SEQ.fetch_add(1, Ordering::Relaxed),
        domain_of(from)
    );
    let mut builder = Message::builder()
        .from(mailbox("from", from)?)
        .subject(subject)
        .date_now()
        .message_id(Some(message_id))
        .header(MIME_VERSION_1_0)
        .header(ContentType::TEXT_PLAIN);
    for a in to {
        builder = builder.to(mailbox("to", a)?);
    }
    let text = body.replace("\r\n", "\n").replace('\r', "\n");
    // lettre ends the body with a line break of its own.
    let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
    // 8bit when lettre allows it (every line under 76 octets), else lettre's choice of
    // quoted-printable or base64.
    let body =
        Body::new_with_encoding(text, ContentTransferEncoding::EightBit).unwrap_or_else(Body::new);
    builder
        .body(body)
        .map_err(|e| NotifyError::Invalid(format!("cannot build the notice: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn addresses() {
        for ok in ["a@b", "ada.lovelace+x@physics.example.org", "o'neil@x-y.de"] {
            assert!(check_address("to", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ada",
            "@x.org",
            "ada@",
            "ada lovelace@x.org",
            "<ada@x.org>",
            "Ada <ada@x.org>",
            "ada@[127.0.0.1]",
            "ada@x..org",
            ".ada@x.org",
            "ada@-x.org",
            "a\"b@x.org",
            "ada@x.org,bob@y.org",
            "müller@x.org",
        ] {
            assert!(
                matches!(
                    check_address("to", bad),
                    Err(NotifyError::InvalidAddress { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_address("to", "ada@x.org\r\nBcc: eve@y.org"),
            Err(NotifyError::HeaderInjection { field: "to" })
        ));
    }

    #[test]
    fn subjects() {
        assert!(check_subject("Your account expires on 2026-04-01").is_ok());
        assert!(matches!(
            check_subject("x\r\nBcc: eve@y.org"),
            Err(NotifyError::HeaderInjection { field: "subject" })
        ));
        assert!(matches!(
            check_subject("x\nBcc: eve@y.org"),
            Err(NotifyError::HeaderInjection { .. })
        ));
        assert!(check_subject("bell\u{7}").is_err());
    }

    /// What goes on the wire: CRLF, the checked headers, 8bit for a UTF-8 body that fits.
    #[test]
    fn composes_plain_utf8_with_headers_in_the_senders_domain() {
        let m = compose(
            "roster@site.example",
            &to(&["a@x.org", "b@y.org"]),
            "Notice",
            "Grüße\n.dot\n",
        )
        .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let head = &format!("{head}\r\n");
        assert!(head.contains("From: roster@site.example\r\n"), "{head}");
        assert!(head.contains("To: a@x.org, b@y.org\r\n"), "{head}");
        assert!(head.contains("Subject: Notice\r\n"), "{head}");
        assert!(head.contains("MIME-Version: 1.0\r\n"), "{head}");
        assert!(
            head.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(
            head.contains("Content-Transfer-Encoding: 8bit\r\n"),
            "{head}"
        );
        assert!(head.contains("@site.example>\r\n"), "Message-ID: {head}");
        // The SMTP layer ends the data with CRLF, the final line break of the notice.
        assert_eq!(body, "Grüße\r\n.dot");
    }

    #[test]
    fn long_lines_go_encoded_and_no_line_exceeds_smtps_limit() {
        for long in [
            "x".repeat(1200),
            "ä".repeat(600),
            format!("{}\n", "y ".repeat(60)),
        ] {
            let m = compose("r@s.example", &to(&["a@x.org"]), "s", &long).unwrap();
            let raw = String::from_utf8(m.formatted()).unwrap();
            assert!(
                raw.contains("Content-Transfer-Encoding: quoted-printable\r\n")
                    || raw.contains("Content-Transfer-Encoding: base64\r\n"),
                "{raw}"
            );
            assert!(
                raw.split("\r\n").all(|l| l.len() <= 998),
                "SMTP's line limit"
            );
        }
    }

    fn config(extra: &str) -> SmtpConfig {
        serde_saphyr::from_str(&format!("host: relay.example\nfrom: r@s.example\n{extra}")).unwrap()
    }

    #[test]
    fn credentials_need_a_password_and_tls() {
        assert_eq!(credentials_problem(&config("")), None);
        assert_eq!(config("").port(), 25);
        assert_eq!(config("tls: starttls").port(), 587);
        assert_eq!(config("tls: tls").port(), 465);
        assert_eq!(config("tls: tls\nport: 2465").port(), 2465);
        let ok = "tls: starttls\nusername: roster\npasswordFile: pw\n";
        assert_eq!(credentials_problem(&config(ok)), None);
        for (bad, says) in [
            ("username: roster\npasswordFile: pw\n", "in clear"),
            ("tls: starttls\nusername: roster\n", "needs its password"),
            ("tls: tls\npasswordEnv: PW\n", "without a username"),
            (
                "tls: tls\nusername: r\npasswordFile: pw\npasswordEnv: PW\n",
                "only one",
            ),
        ] {
            let problem = credentials_problem(&config(bad)).unwrap_or_default();
            assert!(problem.contains(says), "{bad:?}: {problem:?}");
            assert!(Mailer::new(&config(bad), Path::new("/")).is_err());
        }
    }
}
