//! E-mail notices (a guest's coming expiry, …) over plain SMTP.
//!
//! [`Mailer`] is a minimal SMTP client (RFC 5321) on tokio's TCP: `EHLO` (falling back to `HELO`),
//! `MAIL FROM`, one `RCPT TO` per recipient, `DATA` with dot-stuffing and CRLF line endings,
//! `QUIT`. It has **no TLS and no authentication**: the expected setup is a site relay on
//! localhost or in the cluster (a Postfix or an SMTP relay pod) that accepts mail from Roster
//! and forwards it. Every step has a timeout, replies are read with bounded line lengths, and
//! everything that ends up in a header (addresses, the subject) is checked before connecting, so
//! a CR or LF can never inject a header or an SMTP command.
//!
//! The message is `text/plain; charset=utf-8`, sent as `8bit` when the server announces
//! `8BITMIME` (base64 otherwise, or when a line would exceed SMTP's 998 octets); a non-ASCII
//! subject is sent as RFC 2047 encoded words.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How to reach the SMTP relay (the configuration's `guests.smtp`).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's host name or IP address (no TLS, no authentication: a local relay).
    pub host: String,
    /// The relay's port (default 25).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The sender address (`local@domain`), used for `MAIL FROM` and the `From:` header.
    pub from: String,
    /// Seconds allowed for connecting and for each command's reply (default 10).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

fn default_port() -> u16 {
    25
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
    /// Anything else wrong with the input or the settings (no recipients, control characters).
    #[error("{0}")]
    Invalid(String),
    /// The TCP connection could not be made.
    #[error("cannot connect to the SMTP server {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("SMTP server {addr}: no answer within {limit:?} {stage}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// What was going on (`connecting`, `after RCPT TO:<…>`, …).
        stage: String,
        /// The timeout.
        limit: Duration,
    },
    /// The connection broke.
    #[error("SMTP server {addr}: connection lost {stage}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// What was going on.
        stage: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The server's reply is not SMTP.
    #[error("SMTP server {addr}: malformed reply {stage}: {detail}")]
    Protocol {
        /// `host:port`.
        addr: String,
        /// What was going on.
        stage: String,
        /// What was wrong.
        detail: String,
    },
    /// The server answered with an error code.
    #[error("SMTP server {addr} refused {stage}: {code} {text}")]
    Rejected {
        /// `host:port`.
        addr: String,
        /// The refused step (`the greeting`, `RCPT TO:<a@b>`, `the message`, …).
        stage: String,
        /// The reply code.
        code: u16,
        /// The reply text (all lines, joined).
        text: String,
    },
}

/// An SMTP client for one relay and sender. See the module documentation for what it does and
/// does not do (no TLS, no authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailer {
    /// The relay's host name or IP address.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// The sender address (`local@domain`).
    pub from: String,
    /// Allowed for connecting and for each reply.
    pub timeout: Duration,
}

/// Longest reply line read from a server (RFC 5321 allows 512 octets; be generous).
const MAX_REPLY_LINE: u64 = 4096;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 128;
/// Longest line SMTP carries, without its CRLF (RFC 5321 §4.5.3.1.6).
const MAX_LINE: usize = 998;
/// Longest subject sent as is; longer (or non-ASCII) ones become folded encoded words.
const MAX_PLAIN_SUBJECT: usize = 900;

static MESSAGE_SEQ: AtomicU64 = AtomicU64::new(0);

impl Mailer {
    /// A mailer for the configured relay; checks the sender address and the settings.
    pub fn new(config: &SmtpConfig) -> Result<Mailer, NotifyError> {
        if config.host.trim().is_empty() {
            return Err(NotifyError::Invalid("smtp.host is empty".into()));
        }
        if config.timeout_seconds == 0 {
            return Err(NotifyError::Invalid(
                "smtp.timeoutSeconds must be at least 1".into(),
            ));
        }
        check_address("from", &config.from)?;
        Ok(Mailer {
            host: config.host.clone(),
            port: config.port,
            from: config.from.clone(),
            timeout: Duration::from_secs(config.timeout_seconds),
        })
    }

    /// `host:port` as shown in messages (IPv6 literals in brackets).
    fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends one plain-text message to every address in `to`. Everything is checked before
    /// connecting (addresses, CR/LF in the subject); the message counts as sent once the server
    /// accepted it after `DATA` (a failing `QUIT` afterwards is ignored). Any refused recipient
    /// fails the whole send, before the message is transmitted.
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
        check_address("from", &self.from)?;
        if to.is_empty() {
            return Err(NotifyError::Invalid("no recipients".into()));
        }
        for a in to {
            check_address("to", a)?;
        }
        check_subject(subject)?;
        let addr = self.addr();
        let stream = match tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Err(_) => {
                return Err(NotifyError::Timeout {
                    addr,
                    stage: "connecting".into(),
                    limit: self.timeout,
                });
            }
            Ok(Err(source)) => return Err(NotifyError::Connect { addr, source }),
            Ok(Ok(s)) => s,
        };
        let helo_name = match stream.local_addr() {
            Ok(SocketAddr::V4(a)) => format!("[{}]", a.ip()),
            Ok(SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
            Err(_) => "localhost".to_string(),
        };
        let mut s = Session {
            stream: BufReader::new(stream),
            addr,
            timeout: self.timeout,
        };
        s.expect("in the greeting", "the greeting", &[220]).await?;
        let ehlo = s.command(&format!("EHLO {helo_name}"), "EHLO").await?;
        let eight_bit_ok = if ehlo.code == 250 {
            ehlo.lines.iter().skip(1).any(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|k| k.eq_ignore_ascii_case("8BITMIME"))
            })
        } else if (500..600).contains(&ehlo.code) {
            s.run(&format!("HELO {helo_name}"), "HELO", &[250]).await?;
            false
        } else {
            return Err(s.rejected("EHLO", ehlo));
        };
        let message_id = format!(
            "<{}.{}.{}@{}>",
            jiff::Timestamp::now().as_nanosecond(),
            std::process::id(),
            MESSAGE_SEQ.fetch_add(1, Ordering::Relaxed),
            domain_of(&self.from)
        );
        let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::UTC);
        let (data, eight_bit) = compose(
            &self.from,
            to,
            subject,
            body,
            &now,
            &message_id,
            eight_bit_ok,
        )?;
        let body_param = if eight_bit { " BODY=8BITMIME" } else { "" };
        s.run(
            &format!("MAIL FROM:<{}>{body_param}", self.from),
            &format!("MAIL FROM:<{}>", self.from),
            &[250],
        )
        .await?;
        for a in to {
            let stage = format!("RCPT TO:<{a}>");
            s.run(&stage, &stage, &[250, 251]).await?;
        }
        s.run("DATA", "DATA", &[354]).await?;
        s.write(&data, "sending the message").await?;
        s.write(".\r\n", "sending the message").await?;
        s.expect("after the message", "the message", &[250]).await?;
        // The message is accepted; a failing QUIT changes nothing about that.
        let _ = s.command("QUIT", "QUIT").await;
        Ok(())
    }
}

/// One SMTP reply: its code and the text of each line.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

/// An open connection to the relay.
struct Session {
    stream: BufReader<TcpStream>,
    addr: String,
    timeout: Duration,
}

impl Session {
    fn rejected(&self, stage: &str, reply: Reply) -> NotifyError {
        NotifyError::Rejected {
            addr: self.addr.clone(),
            stage: stage.to_string(),
            code: reply.code,
            text: reply.lines.join(" / "),
        }
    }

    fn timed_out(&self, stage: &str) -> NotifyError {
        NotifyError::Timeout {
            addr: self.addr.clone(),
            stage: stage.to_string(),
            limit: self.timeout,
        }
    }

    fn io(&self, stage: &str, source: std::io::Error) -> NotifyError {
        NotifyError::Io {
            addr: self.addr.clone(),
            stage: stage.to_string(),
            source,
        }
    }

    async fn write(&mut self, text: &str, stage: &str) -> Result<(), NotifyError> {
        let stream = self.stream.get_mut();
        match tokio::time::timeout(self.timeout, stream.write_all(text.as_bytes())).await {
            Err(_) => Err(self.timed_out(stage)),
            Ok(Err(e)) => Err(self.io(stage, e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Sends one command line and reads its reply, whatever its code.
    async fn command(&mut self, line: &str, stage: &str) -> Result<Reply, NotifyError> {
        self.write(&format!("{line}\r\n"), &format!("sending {stage}"))
            .await?;
        self.reply(&format!("after {stage}")).await
    }

    /// Sends one command line; its reply must carry one of `ok`.
    async fn run(&mut self, line: &str, stage: &str, ok: &[u16]) -> Result<Reply, NotifyError> {
        let reply = self.command(line, stage).await?;
        if ok.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(self.rejected(stage, reply))
        }
    }

    /// Reads a reply that must carry one of `ok`.
    async fn expect(&mut self, when: &str, stage: &str, ok: &[u16]) -> Result<Reply, NotifyError> {
        let reply = self.reply(when).await?;
        if ok.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(self.rejected(stage, reply))
        }
    }

    /// Reads one (possibly multi-line) reply within the timeout.
    async fn reply(&mut self, stage: &str) -> Result<Reply, NotifyError> {
        match tokio::time::timeout(self.timeout, self.read_reply(stage)).await {
            Err(_) => Err(self.timed_out(stage)),
            Ok(r) => r,
        }
    }

    async fn read_reply(&mut self, stage: &str) -> Result<Reply, NotifyError> {
        let protocol = |detail: String| NotifyError::Protocol {
            addr: self.addr.clone(),
            stage: stage.to_string(),
            detail,
        };
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            if lines.len() >= MAX_REPLY_LINES {
                return Err(protocol(format!(
                    "more than {MAX_REPLY_LINES} lines in one reply"
                )));
            }
            let mut buf = Vec::new();
            let n = (&mut self.stream)
                .take(MAX_REPLY_LINE)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| self.io(stage, e))?;
            if n == 0 || !buf.ends_with(b"\n") {
                if buf.len() as u64 >= MAX_REPLY_LINE {
                    return Err(protocol(format!(
                        "a reply line longer than {MAX_REPLY_LINE} bytes"
                    )));
                }
                return Err(self.io(
                    stage,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ),
                ));
            }
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            let line = String::from_utf8_lossy(&buf).into_owned();
            let bytes = line.as_bytes();
            let digits = bytes.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
            let Some(digits) = digits else {
                return Err(protocol(format!(
                    "{line:?} does not start with a reply code"
                )));
            };
            let c = digits
                .iter()
                .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
            if code.is_some_and(|prev| prev != c) {
                return Err(protocol(format!(
                    "{line:?}: a multi-line reply changed its code"
                )));
            }
            code = Some(c);
            let last = match bytes.get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => return Err(protocol(format!("{line:?} is not an SMTP reply line"))),
            };
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Ok(Reply { code: c, lines });
            }
        }
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

/// The `Subject:` value: as is when short ASCII, else RFC 2047 encoded words (UTF-8, base64) of
/// at most 45 bytes each, folded one per line.
fn encode_subject(subject: &str) -> String {
    if subject.is_ascii() && subject.len() <= MAX_PLAIN_SUBJECT {
        return subject.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in subject.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// The DATA content: headers and body with CRLF line endings, dot-stuffed, ending in CRLF (the
/// terminating `.` line is not included). The body is sent as `8bit` when it is ASCII or
/// `allow_8bit` (the server announced 8BITMIME) and no line is longer than SMTP allows; else as
/// base64. Returns the content and whether it needs `BODY=8BITMIME`.
fn compose(
    from: &str,
    to: &[String],
    subject: &str,
    body: &str,
    date: &jiff::Zoned,
    message_id: &str,
    allow_8bit: bool,
) -> Result<(String, bool), NotifyError> {
    let date = jiff::fmt::rfc2822::to_string(date)
        .map_err(|e| NotifyError::Invalid(format!("cannot format the Date header: {e}")))?;
    let normalized = body.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = normalized
        .strip_suffix('\n')
        .unwrap_or(&normalized)
        .split('\n')
        .collect();
    let ascii = normalized.is_ascii();
    let raw = lines.iter().all(|l| l.len() <= MAX_LINE) && (ascii || allow_8bit);
    let mut out = String::new();
    out.push_str(&format!("Date: {date}\r\n"));
    out.push_str(&format!("From: {from}\r\n"));
    out.push_str(&format!("To: {}\r\n", to.join(",\r\n ")));
    out.push_str(&format!("Subject: {}\r\n", encode_subject(subject)));
    out.push_str(&format!("Message-ID: {message_id}\r\n"));
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    if raw {
        out.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
        for line in &lines {
            if line.starts_with('.') {
                out.push('.');
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
    } else {
        out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        let crlf = lines.join("\r\n") + "\r\n";
        let encoded = base64::engine::general_purpose::STANDARD.encode(crlf.as_bytes());
        for chunk in encoded.as_bytes().chunks(76) {
            // base64 is ASCII, so every chunk is valid UTF-8 and never starts with '.'.
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push_str("\r\n");
        }
    }
    Ok((out, raw && !ascii))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn date() -> jiff::Zoned {
        "2026-03-01T12:00:00Z[UTC]".parse().unwrap()
    }

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
        assert_eq!(encode_subject("plain"), "plain");
        let encoded = encode_subject("Gültig bis 2026");
        assert_eq!(encoded, "=?utf-8?B?R8O8bHRpZyBiaXMgMjAyNg==?=");
        let long = encode_subject(&"ä".repeat(60));
        assert!(long.lines().all(|l| l.len() <= 76), "{long}");
        assert_eq!(long.matches("=?utf-8?B?").count(), 3);
    }

    #[test]
    fn composes_a_dot_stuffed_crlf_message() {
        let (data, eight_bit) = compose(
            "roster@site.example",
            &to(&["a@x.org", "b@y.org"]),
            "Notice",
            "Hello,\n.hidden\r\n..two\nMüller\n",
            &date(),
            "<1@site.example>",
            true,
        )
        .unwrap();
        assert!(eight_bit);
        assert_eq!(
            data,
            "Date: Sun, 1 Mar 2026 12:00:00 +0000\r\n\
             From: roster@site.example\r\n\
             To: a@x.org,\r\n b@y.org\r\n\
             Subject: Notice\r\n\
             Message-ID: <1@site.example>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\
             \r\n\
             Hello,\r\n..hidden\r\n...two\r\nMüller\r\n"
        );
        assert!(!data.replace("\r\n", "").contains(['\r', '\n']));
    }

    #[test]
    fn base64_without_8bitmime_or_for_long_lines() {
        let (data, eight_bit) = compose(
            "r@s.example",
            &to(&["a@x.org"]),
            "s",
            "Müller",
            &date(),
            "<1@s.example>",
            false,
        )
        .unwrap();
        assert!(!eight_bit);
        assert!(data.contains("Content-Transfer-Encoding: base64\r\n\r\nTcO8bGxlcg0K\r\n"));
        let (data, eight_bit) = compose(
            "r@s.example",
            &to(&["a@x.org"]),
            "s",
            &"x".repeat(2000),
            &date(),
            "<1@s.example>",
            true,
        )
        .unwrap();
        assert!(!eight_bit);
        assert!(data.contains("base64"));
        assert!(data.split("\r\n").all(|l| l.len() <= 998));
    }

    /// A scripted server: answers each line it reads with the next canned reply.
    async fn scripted(replies: Vec<&'static str>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut socket = BufReader::new(socket);
            let mut seen = Vec::new();
            let mut replies = replies.into_iter();
            if let Some(greeting) = replies.next() {
                socket
                    .get_mut()
                    .write_all(greeting.as_bytes())
                    .await
                    .unwrap();
            }
            for reply in replies {
                let mut line = String::new();
                if socket.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                seen.push(line.trim_end().to_string());
                socket.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        });
        (port, handle)
    }

    fn mailer(port: u16) -> Mailer {
        Mailer::new(&SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            from: "roster@site.example".into(),
            timeout_seconds: 2,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_refused_recipient_fails_before_data() {
        let (port, server) = scripted(vec![
            "220 hi\r\n",
            "250-relay\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
            "250 ok\r\n",
            "550 5.1.1 no such user\r\n",
        ])
        .await;
        let err = mailer(port)
            .send(&to(&["nobody@x.org"]), "s", "b")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "SMTP server 127.0.0.1:{port} refused RCPT TO:<nobody@x.org>: 550 5.1.1 no such user"
            )
        );
        let seen = server.await.unwrap();
        assert!(seen[0].starts_with("EHLO [127.0.0.1]"), "{seen:?}");
        assert_eq!(seen[1], "MAIL FROM:<roster@site.example>");
        assert_eq!(seen[2], "RCPT TO:<nobody@x.org>");
    }

    #[tokio::test]
    async fn helo_when_ehlo_is_unknown_and_garbage_is_an_error() {
        let (port, _server) = scripted(vec![
            "220 old\r\n",
            "502 what\r\n",
            "250 hello\r\n",
            "hello there\r\n",
        ])
        .await;
        let err = mailer(port)
            .send(&to(&["a@x.org"]), "s", "b")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NotifyError::Protocol { stage, .. } if stage == "after MAIL FROM:<roster@site.example>"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut m = mailer(port);
        m.timeout = Duration::from_millis(200);
        let err = m.send(&to(&["a@x.org"]), "s", "b").await.unwrap_err();
        assert!(
            matches!(&err, NotifyError::Timeout { stage, .. } if stage == "in the greeting"),
            "{err}"
        );
        drop(listener);
    }
}
