//! E-mail notices end to end: `roster::notify::Mailer` against a real SMTP server (aiosmtpd from
//! `.dev/venv`, which `make tools` installs), reading what it received back from its maildir.

mod support;

use base64::Engine;
use roster::notify::{Mailer, NotifyError, SmtpConfig};
use support::*;

fn mailer(port: u16) -> Mailer {
    Mailer::new(&SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        from: "roster@hpc.example.org".into(),
        timeout_seconds: 10,
    })
    .expect("valid settings")
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
    let decoded: String = raw[0]
        .split(' ')
        .map(|word| {
            let b64 = word
                .strip_prefix("=?utf-8?B?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap_or_else(|| panic!("{word:?} is not an encoded word"));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    assert_eq!(decoded, subject);
    assert_eq!(body, "short\n");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let port = free_port();
    let err = mailer(port)
        .send(&["a@example.org".to_string()], "s", "b")
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Connect { .. }), "{err:?}");
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
