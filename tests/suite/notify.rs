//! E-mail notices end to end: `roster::notify::Mailer` against a real SMTP relay (aiosmtpd from
//! `.dev/venv`, which `make tools` installs; `testing/smtp-relay/relay.py`), plain, with
//! STARTTLS or TLS from the start, with authentication, reading what it received back from its
//! maildir. A relay whose certificate does not verify gets nothing: no password, no message.

use crate::support;

use base64::Engine;
use std::ffi::OsStr;
use std::path::Path;

use roster::notify::{Mailer, NotifyError, SmtpConfig};
use support::*;

/// The settings as a site writes them: `guests.smtp` of the configuration file, plus `extra`.
fn settings(port: u16, extra: &str) -> SmtpConfig {
    let yaml = format!("host: 127.0.0.1\nport: {port}\nfrom: roster@hpc.example.org\n{extra}");
    serde_saphyr::from_str(&yaml).expect("valid guests.smtp")
}

fn mailer(port: u16) -> Mailer {
    Mailer::new(&settings(port, ""), Path::new("/")).expect("valid settings")
}

/// Splits a stored message into (unfolded header lines, body).
fn split(message: &[u8]) -> (Vec<String>, String) {
    let text = String::from_utf8(message.to_vec()).expect("the stored message is UTF-8");
    let text = text.replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").expect("headers and body");
    let headers = head
        .replace("\n ", " ")
        .replace("\n\t", " ")
        .lines()
        .map(str::to_string)
        .collect();
    (headers, body.to_string())
}

fn header<'a>(headers: &'a [String], name: &str) -> Vec<&'a str> {
    let prefix = format!("{}: ", name.to_ascii_lowercase());
    headers
        .iter()
        .filter(|h| h.to_ascii_lowercase().starts_with(&prefix))
        .map(|h| &h[prefix.len()..])
        .collect()
}

#[tokio::test]
async fn a_notice_arrives_with_recipients_subject_and_a_dot_stuffed_utf8_body() {
    let dir = scratch("notify-arrives");
    let server = smtpd(&dir);
    let to = vec![
        "ada@physics.example.org".to_string(),
        "host@hpc.example.org".to_string(),
    ];
    let body = "Dear Ada,\n\nyour guest account ends on 2026-04-30.\n.this line starts with a dot\n..and this one with two\n.\nGrüße aus dem Rechenzentrum — Jürgen\n";
    mailer(server.port)
        .send(&to, "Your guest account ends on 2026-04-30", body)
        .await
        .expect("sent");
    let messages = received(&server.maildir);
    assert_eq!(messages.len(), 1, "one message in the maildir");
    let (headers, stored_body) = split(&messages[0]);
    assert_eq!(
        header(&headers, "X-RcptTo"),
        ["ada@physics.example.org, host@hpc.example.org"],
        "{headers:?}"
    );
    assert_eq!(header(&headers, "X-MailFrom"), ["roster@hpc.example.org"]);
    assert_eq!(header(&headers, "From"), ["roster@hpc.example.org"]);
    assert_eq!(
        header(&headers, "To"),
        ["ada@physics.example.org, host@hpc.example.org"]
    );
    assert_eq!(
        header(&headers, "Subject"),
        ["Your guest account ends on 2026-04-30"]
    );
    assert_eq!(header(&headers, "MIME-Version"), ["1.0"]);
    assert_eq!(
        header(&headers, "Content-Type"),
        ["text/plain; charset=utf-8"]
    );
    assert_eq!(header(&headers, "Content-Transfer-Encoding"), ["8bit"]);
    let message_id = header(&headers, "Message-ID");
    assert!(
        message_id.len() == 1
            && message_id[0].starts_with('<')
            && message_id[0].ends_with("@hpc.example.org>"),
        "{message_id:?}"
    );
    let date = header(&headers, "Date");
    assert_eq!(date.len(), 1);
    let sent = jiff::fmt::rfc2822::parse(date[0]).expect("an RFC 2822 Date");
    let age = jiff::Timestamp::now().duration_since(sent.timestamp());
    assert!(age.as_secs() < 300, "Date {} is not now", date[0]);
    // Dot-stuffing undone by the server: exactly the lines that were sent, raw UTF-8 included.
    assert_eq!(stored_body, body);
}

#[tokio::test]
async fn a_non_ascii_subject_travels_as_encoded_words() {
    let dir = scratch("notify-subject");
    let server = smtpd(&dir);
    let subject = "Gastzugang von Jürgen Müller läuft am 30.04.2026 ab — bitte verlängern";
    mailer(server.port)
        .send(&["jm@example.org".to_string()], subject, "short")
        .await
        .expect("sent");
    let messages = received(&server.maildir);
    assert_eq!(messages.len(), 1);
    let (headers, body) = split(&messages[0]);
    let raw = header(&headers, "Subject");
    assert_eq!(raw.len(), 1, "{headers:?}");
    // RFC 2047: encoded words (UTF-8, base64 or Q) among plain ones; the white space between
    // two adjacent encoded words is not part of the text.
    let mut decoded = String::new();
    let mut last_encoded = false;
    for word in raw[0].split_whitespace() {
        let lower = word.to_ascii_lowercase();
        let encoded = lower.starts_with("=?utf-8?") && lower.ends_with("?=");
        if !(decoded.is_empty() || encoded && last_encoded) {
            decoded.push(' ');
        }
        if encoded {
            let (kind, text) = word[8..word.len() - 2].split_once('?').unwrap();
            let bytes = match kind {
                "b" | "B" => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap(),
                "q" | "Q" => q_decode(text),
                _ => panic!("{word:?}: unknown encoding"),
            };
            decoded.push_str(&String::from_utf8(bytes).unwrap());
        } else {
            decoded.push_str(word);
        }
        last_encoded = encoded;
    }
    assert!(
        raw[0].contains("=?"),
        "a non-ASCII subject is encoded: {raw:?}"
    );
    assert_eq!(decoded, subject);
    assert_eq!(body, "short\n");
}

/// RFC 2047's Q encoding: `_` a space, `=XX` a byte.
fn q_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()]
                    .iter()
                    .map(|&c| c as char)
                    .collect();
                out.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            b => out.push(b),
        }
    }
    out
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = free_port();
    let err = mailer(port)
        .send(&["a@example.org".to_string()], "s", "b")
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("refused"), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot connect to the SMTP server 127.0.0.1:{port}: "
        )),
        "{message}"
    );
}

#[tokio::test]
async fn header_injection_is_refused_before_connecting() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let m = mailer(port);
    let to = vec!["a@example.org".to_string()];
    let err = m
        .send(&to, "Notice\r\nBcc: eve@evil.example", "b")
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::HeaderInjection { field: "subject" }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "subject contains a line break (CR or LF): refused, it would inject mail headers"
    );
    let err = m
        .send(
            &["a@example.org\nRCPT TO:<eve@evil.example>".to_string()],
            "s",
            "b",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::HeaderInjection { field: "to" }),
        "{err:?}"
    );
    let err = m
        .send(&["Ada <a@example.org>".to_string()], "s", "b")
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::InvalidAddress { field: "to", .. }),
        "{err:?}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing may connect for refused input"
    );
}

/// A CA, a relay certificate for 127.0.0.1 it signed, and the relay's password file.
struct Pki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    password: std::path::PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca = test_ca(dir, "relay-ca");
    let (cert, key) = server_cert(
        dir,
        "relay",
        (&ca, &dir.join("relay-ca.key")),
        "IP:127.0.0.1",
    );
    let password = dir.join("smtp-password");
    std::fs::write(&password, "s3cret with spaces\n").unwrap();
    Pki {
        ca,
        cert,
        key,
        password,
    }
}

/// The relay in `mode` (`starttls` or `tls`) with `pki`'s certificate, requiring user `roster`.
fn tls_relay(dir: &Path, mode: &str, pki: &Pki) -> Smtpd {
    let args: Vec<&OsStr> = vec![
        "--tls".as_ref(),
        mode.as_ref(),
        "--cert".as_ref(),
        pki.cert.as_os_str(),
        "--key".as_ref(),
        pki.key.as_os_str(),
        "--user".as_ref(),
        "roster".as_ref(),
        "--password-file".as_ref(),
        pki.password.as_os_str(),
    ];
    smtp_relay(dir, &args)
}

fn secure_mailer(port: u16, mode: &str, ca: &Path, password: &Path) -> Mailer {
    let extra = format!(
        "tls: {mode}\ncaFile: {}\nusername: roster\npasswordFile: {}\n",
        ca.display(),
        password.display()
    );
    Mailer::new(&settings(port, &extra), Path::new("/")).expect("valid settings")
}

#[tokio::test]
async fn a_notice_goes_through_starttls_and_tls_with_authentication_and_a_wrong_password_is_refused()
 {
    let dir = scratch("notify-auth");
    let pki = pki(&dir);
    for mode in ["starttls", "tls"] {
        let relay_dir = dir.join(mode);
        std::fs::create_dir_all(&relay_dir).unwrap();
        let relay = tls_relay(&relay_dir, mode, &pki);
        let to = vec!["host@hpc.example.org".to_string()];
        secure_mailer(relay.port, mode, &pki.ca, &pki.password)
            .send(&to, "Guest g expires soon", "Über TLS.\n")
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let messages = received(&relay.maildir);
        assert_eq!(messages.len(), 1, "{mode}: one message");
        let (headers, body) = split(&messages[0]);
        assert_eq!(header(&headers, "X-RcptTo"), ["host@hpc.example.org"]);
        assert_eq!(body, "Über TLS.\n");
        // The relay checks the password: a wrong one is its refusal, and nothing is stored.
        let wrong = dir.join("wrong-password");
        std::fs::write(&wrong, "not it\n").unwrap();
        let err = secure_mailer(relay.port, mode, &pki.ca, &wrong)
            .send(&to, "s", "b")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NotifyError::Rejected { code, .. } if code.starts_with("535")),
            "{mode}: {err:?}"
        );
        assert_eq!(
            received(&relay.maildir).len(),
            1,
            "{mode}: nothing more stored"
        );
    }
}

#[tokio::test]
async fn a_relay_whose_certificate_is_wrong_gets_neither_the_password_nor_the_notice() {
    let dir = scratch("notify-badcert");
    let pki = pki(&dir);
    // Signed by a CA Roster was not told to trust.
    let other_ca = test_ca(&dir, "other-ca");
    // Signed by the right CA, but for another host.
    let (wrong_name, wrong_key) = server_cert(
        &dir,
        "elsewhere",
        (&pki.ca, &dir.join("relay-ca.key")),
        "DNS:mail.elsewhere.example",
    );
    let misnamed = Pki {
        ca: pki.ca.clone(),
        cert: wrong_name,
        key: wrong_key,
        password: pki.password.clone(),
    };
    for (case, relay_pki, trusted) in [
        ("unknown CA", &pki, &other_ca),
        ("wrong name", &misnamed, &pki.ca),
    ] {
        for mode in ["starttls", "tls"] {
            let relay_dir = dir.join(format!("{}-{mode}", case.replace(' ', "-")));
            std::fs::create_dir_all(&relay_dir).unwrap();
            let relay = tls_relay(&relay_dir, mode, relay_pki);
            let err = secure_mailer(relay.port, mode, trusted, &pki.password)
                .send(&["a@example.org".to_string()], "s", "b")
                .await
                .unwrap_err();
            assert!(
                matches!(err, NotifyError::Tls { .. }),
                "{case}, {mode}: {err:?}"
            );
            assert!(
                err.to_string().contains("nothing was sent"),
                "{case}, {mode}: {err}"
            );
            assert!(received(&relay.maildir).is_empty(), "{case}, {mode}");
        }
    }
    // A relay that does not offer STARTTLS when it is required: refused, nothing sent.
    let plain = smtpd(&dir.join("plain"));
    let err = secure_mailer(plain.port, "starttls", &pki.ca, &pki.password)
        .send(&["a@example.org".to_string()], "s", "b")
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Tls { .. }), "{err:?}");
    assert!(received(&plain.maildir).is_empty());
}
