//! SSSRMAP, Gold's wire protocol (`../notes/gold-sssrmap.md` in the design): signed XML
//! requests over plain TCP, one request per connection, and replies framed in Gold's own
//! (non-standard) chunking, read from the socket by hand.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::xml::{self, Element};

/// One `<Where>` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Where {
    pub name: String,
    pub value: String,
    /// `None`: equality.
    pub op: Option<String>,
}

/// A Gold request: action on objects, with columns, assignments, conditions and options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub action: String,
    pub objects: Vec<String>,
    pub gets: Vec<String>,
    pub sets: Vec<(String, String)>,
    pub wheres: Vec<Where>,
    pub options: Vec<(String, String)>,
    /// Ask for the reply in several pieces (large queries).
    pub chunking: bool,
}

impl Request {
    pub fn new(action: &str, object: &str) -> Request {
        Request {
            action: action.into(),
            objects: vec![object.into()],
            ..Default::default()
        }
    }

    pub fn get(mut self, name: &str) -> Request {
        self.gets.push(name.into());
        self
    }

    pub fn set(mut self, name: &str, value: &str) -> Request {
        self.sets.push((name.into(), value.into()));
        self
    }

    pub fn filter(mut self, name: &str, value: &str) -> Request {
        self.wheres.push(Where {
            name: name.into(),
            value: value.into(),
            op: None,
        });
        self
    }

    pub fn option(mut self, name: &str, value: &str) -> Request {
        self.options.push((name.into(), value.into()));
        self
    }

    /// The `<Body>` element, byte for byte as it is signed and sent.
    pub fn body(&self, actor: &str) -> String {
        let mut r = Element::new("Request")
            .attr("action", &self.action)
            .attr("actor", actor);
        if self.chunking {
            r = r.attr("chunking", "True");
        }
        for o in &self.objects {
            r = r.child(Element::new("Object").text(o));
        }
        for g in &self.gets {
            r = r.child(Element::new("Get").attr("name", g));
        }
        for (n, v) in &self.sets {
            r = r.child(Element::new("Set").attr("name", n).text(v));
        }
        for w in &self.wheres {
            let mut e = Element::new("Where").attr("name", &w.name);
            if let Some(op) = &w.op {
                e = e.attr("op", op);
            }
            r = r.child(e.text(&w.value));
        }
        for (n, v) in &self.options {
            r = r.child(Element::new("Option").attr("name", n).text(v));
        }
        Element::new("Body").child(r).to_xml()
    }

    /// A one-line description for logs and plans (never the key).
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.action, self.objects.join("+"));
        for (n, v) in &self.sets {
            s.push_str(&format!(" {n}={v}"));
        }
        for w in &self.wheres {
            s.push_str(&format!(
                " where {}{}{}",
                w.name,
                w.op.as_deref().unwrap_or("="),
                w.value
            ));
        }
        for (n, v) in &self.options {
            s.push_str(&format!(" {n}:{v}"));
        }
        s
    }
}

/// `(DigestValue, SignatureValue)` of a body: base64(SHA-1(body)) and
/// base64(HMAC-SHA1(key, the raw 20-byte digest)).
pub fn sign(body: &[u8], key: &str) -> (String, String) {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, body);
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes());
    let mac = ring::hmac::sign(&k, digest.as_ref());
    let b64 = base64::engine::general_purpose::STANDARD;
    (b64.encode(digest.as_ref()), b64.encode(mac.as_ref()))
}

/// The whole signed message (XML declaration, Envelope, Body, Signature).
pub fn payload(body: &str, key: &str) -> String {
    let (digest, signature) = sign(body.as_bytes(), key);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope>{body}<Signature><DigestValue>{digest}</DigestValue><SignatureValue>{signature}</SignatureValue><SecurityToken type=\"Symmetric\"></SecurityToken></Signature></Envelope>"
    )
}

/// The bytes on the wire: the HTTP request head, then the payload as one chunk.
pub fn frame(payload: &str) -> Vec<u8> {
    format!(
        "POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{payload}0\r\n",
        payload.len()
    )
    .into_bytes()
}

/// Gold's answer to one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// `Success`, `Warning` or `Failure`.
    pub value: String,
    /// Three digits; the first is the class.
    pub code: String,
    pub message: String,
    pub count: Option<u64>,
    /// One row per object in `Data`: attribute → value.
    pub data: Vec<std::collections::BTreeMap<String, String>>,
}

/// Why a request did not get an answer, or got a refusal.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoldError {
    #[error("cannot reach Gold at {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("Gold at {addr} did not answer within {seconds} s")]
    Timeout { addr: String, seconds: u64 },
    #[error("Gold's reply could not be read: {0}")]
    Protocol(String),
    /// The connection ended before any byte of a reply: whether a write was performed is
    /// unknown, so only reads are retried on it (deposits are checked first).
    #[error("Gold at {addr} closed the connection without a reply ({message})")]
    NoReply { addr: String, message: String },
    #[error(
        "Gold refused the signature (code {code}): {message}; check gold.authKeyFile against the server's auth_key"
    )]
    Authentication { code: String, message: String },
    #[error("Gold refused {what} (code {code}): {message}")]
    Failed {
        what: String,
        code: String,
        message: String,
    },
}

impl GoldError {
    /// Worth retrying later (the server was not reached or did not answer).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GoldError::Unreachable { .. } | GoldError::Timeout { .. } // 730: the database connection failed. (720 is a rule or SQL error in Gold 2.2 — a
                                                                      // quote in a value, say — and asking again gets the same answer.)
        ) || matches!(self, GoldError::Failed { code, .. } if code == "730")
    }
}

/// Splits Gold's reply framing: the HTTP head, then `<hex>\r\n<data>` pieces (CRLF after the
/// data tolerated) up to a bare `0`.
pub fn unframe(raw: &[u8]) -> Result<Vec<String>, GoldError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| GoldError::Protocol("the reply is not UTF-8".into()))?;
    let (head, mut rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| GoldError::Protocol("no end of the HTTP head".into()))?;
    let status = head.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(GoldError::Protocol(format!("HTTP status line {status:?}")));
    }
    let mut pieces = vec![];
    loop {
        rest = rest.trim_start_matches("\r\n");
        let (len, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| GoldError::Protocol("a chunk length line is missing".into()))?;
        let n = usize::from_str_radix(len.trim(), 16)
            .map_err(|_| GoldError::Protocol(format!("bad chunk length {len:?}")))?;
        if n == 0 {
            return Ok(pieces);
        }
        if after.len() < n || !after.is_char_boundary(n) {
            return Err(GoldError::Protocol(
                "a chunk is shorter than announced".into(),
            ));
        }
        pieces.push(after[..n].to_string());
        rest = &after[n..];
    }
}

/// Reads the pieces' Envelopes into one Response (rows of chunked replies concatenated).
pub fn parse_reply(pieces: &[String]) -> Result<Response, GoldError> {
    let mut out = Response::default();
    for piece in pieces {
        let env = xml::parse(piece).map_err(GoldError::Protocol)?;
        let resp = env
            .find("Body")
            .and_then(|b| b.find("Response"))
            .ok_or_else(|| GoldError::Protocol("no Body/Response in the reply".into()))?;
        if let Some(s) = resp.find("Status") {
            let field = |n: &str| s.find(n).map(|e| e.text_content()).unwrap_or_default();
            out.value = field("Value");
            out.code = field("Code");
            out.message = field("Message");
        }
        if let Some(c) = resp.find("Count") {
            let n: u64 = c.text_content().trim().parse().unwrap_or(0);
            // A hostile server's counts must not overflow (found by fuzz/gold_reply).
            out.count = Some(out.count.unwrap_or(0).saturating_add(n));
        }
        if let Some(d) = resp.find("Data") {
            for row in d.elements() {
                out.data.push(
                    row.elements()
                        .map(|a| (a.name.clone(), a.text_content()))
                        .collect(),
                );
            }
        }
    }
    if out.code.len() != 3 {
        return Err(GoldError::Protocol(format!(
            "no status code in the reply ({:?})",
            out.code
        )));
    }
    Ok(out)
}

/// A connection factory: Gold takes one request per connection.
#[derive(Clone)]
pub struct Client {
    pub addr: String,
    pub actor: String,
    key: String,
    pub timeout: Duration,
}

/// Never the key: a debug print must not leak it into a log.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("actor", &self.actor)
            .field("key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    pub fn new(addr: String, actor: String, key: String, timeout: Duration) -> Client {
        Client {
            addr,
            actor,
            key,
            timeout,
        }
    }

    /// Sends one request and reads the whole reply. A refusal (Failure) is an error; 4xx with
    /// 424 is an authentication error.
    pub async fn send(&self, req: &Request) -> Result<Response, GoldError> {
        let operation = format!("{} {}", req.action, req.objects.join(","));
        crate::backend::call("gold", &operation, self.exchange(req), Result::is_ok).await
    }

    async fn exchange(&self, req: &Request) -> Result<Response, GoldError> {
        let bytes = frame(&payload(&req.body(&self.actor), &self.key));
        let seconds = self.timeout.as_secs().max(1);
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| GoldError::Unreachable {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                })?;
            s.write_all(&bytes)
                .await
                .map_err(|e| GoldError::Unreachable {
                    addr: self.addr.clone(),
                    message: e.to_string(),
                })?;
            let mut raw = Vec::new();
            let read = s.read_to_end(&mut raw).await;
            let no_reply = |message: String| GoldError::NoReply {
                addr: self.addr.clone(),
                message,
            };
            match read {
                Ok(_) if raw.is_empty() => Err(no_reply("end of stream".into())),
                Err(e) if raw.is_empty() => Err(no_reply(e.to_string())),
                Err(e) => Err(GoldError::Protocol(e.to_string())),
                Ok(_) => Ok::<_, GoldError>(raw),
            }
        };
        let raw = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| GoldError::Timeout {
                addr: self.addr.clone(),
                seconds,
            })??;
        let resp = parse_reply(&unframe(&raw)?)?;
        if resp.code.starts_with('4') {
            return Err(GoldError::Authentication {
                code: resp.code,
                message: resp.message,
            });
        }
        if resp.value == "Failure" || !(resp.code.starts_with('0')) {
            return Err(GoldError::Failed {
                what: req.describe(),
                code: resp.code,
                message: resp.message,
            });
        }
        Ok(resp)
    }
}

/// Free text as Gold can take it: ASCII only (Latin letters as their base letters, through
/// [`crate::text::to_ascii`]; anything else outside ASCII becomes a space), no `|`, `\\` or
/// control characters (Gold's own tools strip them), and **no `'`**: Gold 2.2 pastes values into
/// its SQL as `'value'` without escaping, so a quote would end the string — `O'Brien` fails with
/// 720 and `x' < 'y` is evaluated by the database (notes/gold-sssrmap.md). Apostrophes are
/// dropped (`O'Brien` → `OBrien`, `Dell'Acqua` → `DellAcqua`). Whitespace runs become one space;
/// at most `max` bytes.
pub fn clean(s: &str, max: usize) -> String {
    let mut t = String::with_capacity(s.len());
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let ascii = if c.is_ascii() {
            std::borrow::Cow::Borrowed(&*c.encode_utf8(&mut buf))
        } else {
            std::borrow::Cow::Owned(crate::text::to_ascii(c.encode_utf8(&mut buf)))
        };
        if ascii.is_empty() {
            t.push(' ');
        }
        for a in ascii.chars() {
            match a {
                '\'' => {}
                '|' | '\\' => t.push(' '),
                a if a.is_ascii_control() => t.push(' '),
                a => t.push(a),
            }
        }
    }
    let mut t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    t.truncate(max);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notes_test_vector_signs_as_the_live_server_accepted() {
        let body = Request::new("Create", "User")
            .set("Name", "bob")
            .body("root");
        assert_eq!(
            body,
            "<Body><Request action=\"Create\" actor=\"root\"><Object>User</Object><Set name=\"Name\">bob</Set></Request></Body>"
        );
        assert_eq!(body.len(), 108);
        let (digest, signature) = sign(body.as_bytes(), "lab-gold-shared-secret");
        assert_eq!(digest, "PpHlkPa0s4WT6XJLL4qmJiIN+IM=");
        assert_eq!(signature, "lBo9OZE1BXdfXzOzmE+sLG9oRcA=");
    }

    #[test]
    fn the_request_is_one_chunk_after_the_head() {
        let p = payload("<Body></Body>", "k");
        let f = String::from_utf8(frame(&p)).unwrap();
        assert!(f.starts_with("POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(f.ends_with(&format!("{:x}\r\n{p}0\r\n", p.len())));
    }

    #[test]
    fn counts_of_chunked_replies_saturate_instead_of_overflowing() {
        let piece = "<Envelope><Body><Response><Status><Value>Success</Value><Code>000</Code></Status><Count>18446744073709551615</Count></Response></Body></Envelope>".to_string();
        let r = parse_reply(&[piece.clone(), piece]).unwrap();
        assert_eq!(r.count, Some(u64::MAX));
    }

    #[test]
    fn replies_in_gold_framing_are_read_including_chunked_queries() {
        let piece = |data: &str, attrs: &str| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope><Body><Response actor=\"root\"{attrs}><Status><Value>Success</Value><Code>000</Code><Message></Message></Status><Count>1</Count><Data>{data}</Data></Response></Body></Envelope>"
            )
        };
        let a = piece(
            "<User><Name>amy</Name><Active>True</Active></User>",
            " chunkNum=\"1\" chunkMax=\"-1\"",
        );
        let b = piece(
            "<User><Name>bob</Name><Active></Active></User>",
            " chunkNum=\"2\"",
        );
        let raw = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}{:x}\r\n{b}0\r\n",
            a.len(),
            b.len()
        );
        let r = parse_reply(&unframe(raw.as_bytes()).unwrap()).unwrap();
        assert_eq!(r.code, "000");
        assert_eq!(r.count, Some(2));
        assert_eq!(r.data.len(), 2);
        assert_eq!(r.data[0]["Name"], "amy");
        assert_eq!(r.data[1]["Active"], "");
        assert!(unframe(b"HTTP/1.1 400 Bad Request\r\n\r\n0\r\n").is_err());
        assert!(unframe(b"HTTP/1.1 200 OK\r\n\r\nff\r\nshort").is_err());
    }

    #[test]
    fn free_text_is_cleaned_to_what_gold_can_sign() {
        assert_eq!(
            clean("Müller | R&D\\lab\u{7}\n<x>", 100),
            "Mueller R&D lab <x>"
        );
        assert_eq!(
            clean("Søren Ødegård, Straße 東京", 100),
            "Soren Odegard, Strasse"
        );
        assert_eq!(clean("abcdef", 3), "abc");
        assert_eq!(clean("Nguyễn Thị", 100), "Nguyen Thi");
    }

    /// Gold pastes values into SQL between single quotes without escaping: no value Roster
    /// sends can contain one, whatever it was written with (a fullwidth apostrophe decomposes
    /// to `'`, so the quote is dropped after transliteration).
    #[test]
    fn no_cleaned_value_can_leave_its_quotes() {
        assert_eq!(clean("O'Brien", 100), "OBrien");
        assert_eq!(clean("x' < 'y", 100), "x < y");
        assert_eq!(
            clean("a'); DROP TABLE g_user; --", 100),
            "a); DROP TABLE g_user; --"
        );
        assert_eq!(clean("O\u{FF07}Brien", 100), "OBrien");
        let every: String = (0..0x3000u32).filter_map(char::from_u32).collect();
        for piece in every.as_bytes().chunks(64).map(String::from_utf8_lossy) {
            let c = clean(&piece, 1000);
            assert!(
                c.is_ascii()
                    && !c.contains(['\'', '|', '\\'])
                    && !c.chars().any(|x| x.is_ascii_control()),
                "{piece:?} → {c:?}"
            );
        }
    }
}
