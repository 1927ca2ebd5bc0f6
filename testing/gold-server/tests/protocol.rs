//! The Gold test server checked from raw bytes: hand-written request bodies, signed with
//! `proto::sign` over the literal body text, framed by hand, replies split by hand. Nothing here
//! uses the client's encoder, so the server is checked independently of it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use roster::gold::proto::sign;
use roster::gold::xml;
use roster_gold_server::{GoldServer, LogEntry, Options, PSEUDO_NAMES};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const KEY: &str = "lab-gold-shared-secret";
const REPLY_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nTransfer-Encoding: chunked\r\n\r\n";
const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

async fn server() -> GoldServer {
    GoldServer::start(
        "127.0.0.1:0",
        Options {
            secret: KEY.into(),
            actors: vec!["root".into()],
            chunk_rows: 3,
            readers: vec![],
        },
    )
    .await
    .expect("the server starts")
}

/// The Envelope with a Signature carrying these values.
fn message(body: &str, digest: &str, signature: &str) -> String {
    format!(
        "{DECLARATION}<Envelope>{body}<Signature><DigestValue>{digest}</DigestValue><SignatureValue>{signature}</SignatureValue><SecurityToken type=\"Symmetric\"></SecurityToken></Signature></Envelope>"
    )
}

fn signed_with(body: &str, key: &str) -> String {
    let (digest, signature) = sign(body.as_bytes(), key);
    message(body, &digest, &signature)
}

/// The head and the payload as one chunk, as Gold's own clients send it (no CRLF after data).
fn post(payload: &str) -> Vec<u8> {
    format!(
        "POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{payload}0\r\n",
        payload.len()
    )
    .into_bytes()
}

/// `<Body><Request action=… actor="root"><Object>…</Object>PARTS</Request></Body>`.
fn body(action: &str, object: &str, parts: &str) -> String {
    format!(
        "<Body><Request action=\"{action}\" actor=\"root\"><Object>{object}</Object>{parts}</Request></Body>"
    )
}

/// Sends bytes on a fresh connection and reads until the server closes it.
async fn exchange(server: &GoldServer, bytes: &[u8]) -> Vec<u8> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(server.addr()).await?;
        s.write_all(bytes).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .expect("the server closes the connection")
        .expect("the exchange")
}

/// Gold's reply framing, strictly: the exact head, `<hex>\r\n<payload>` pieces with nothing
/// after the data, a bare `0\r\n` at the very end.
fn pieces(raw: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(raw).expect("UTF-8 reply");
    let mut rest = text
        .strip_prefix(REPLY_HEAD)
        .unwrap_or_else(|| panic!("not Gold's reply head: {text:?}"));
    let mut out = Vec::new();
    loop {
        let (len, after) = rest.split_once("\r\n").expect("a chunk length line");
        let n = usize::from_str_radix(len, 16).unwrap_or_else(|_| panic!("length {len:?}"));
        if n == 0 {
            assert_eq!(after, "", "nothing after the bare 0\\r\\n");
            return out;
        }
        let piece = &after[..n];
        assert!(piece.starts_with(DECLARATION), "{piece}");
        out.push(piece.to_string());
        rest = &after[n..];
    }
}

/// One reply, its pieces read with the generic XML parser.
#[derive(Debug, Default)]
struct Reply {
    /// The Response's `actor` (of the last piece).
    actor: String,
    value: String,
    code: String,
    message: String,
    /// Per piece.
    counts: Vec<Option<usize>>,
    /// `(chunkNum, chunkMax)` per piece.
    chunks: Vec<(Option<String>, Option<String>)>,
    rows: Vec<BTreeMap<String, String>>,
    raw: String,
}

impl Reply {
    fn count(&self) -> usize {
        self.counts.iter().map(|c| c.expect("a Count")).sum()
    }

    fn assert_ok(&self, code: &str) -> &Reply {
        assert_eq!(
            (self.value.as_str(), self.code.as_str()),
            ("Success", code),
            "{}",
            self.message
        );
        self
    }

    fn assert_failed(&self, code: &str, message: &str) {
        assert_eq!((self.value.as_str(), self.code.as_str()), ("Failure", code));
        assert!(
            self.message.contains(message),
            "{:?} lacks {message:?}",
            self.message
        );
        assert_eq!(self.counts, [None], "a failure has no Count");
    }

    fn column(&self, name: &str) -> Vec<&str> {
        self.rows.iter().map(|r| r[name].as_str()).collect()
    }
}

fn read_reply(raw: &[u8]) -> Reply {
    let mut r = Reply {
        raw: String::from_utf8_lossy(raw).into_owned(),
        ..Reply::default()
    };
    for piece in pieces(raw) {
        let env = xml::parse(&piece).expect("well-formed piece");
        let resp = env
            .find("Body")
            .and_then(|b| b.find("Response"))
            .expect("Body/Response");
        r.actor = resp.get_attr("actor").unwrap_or("").to_string();
        r.chunks.push((
            resp.get_attr("chunkNum").map(String::from),
            resp.get_attr("chunkMax").map(String::from),
        ));
        let status = resp.find("Status").expect("Status");
        let field = |n: &str| status.find(n).expect(n).text_content();
        r.value = field("Value");
        r.code = field("Code");
        r.message = field("Message");
        r.counts.push(
            resp.find("Count")
                .map(|c| c.text_content().parse().unwrap()),
        );
        if let Some(data) = resp.find("Data") {
            for row in data.elements() {
                r.rows.push(
                    row.elements()
                        .map(|a| (a.name.clone(), a.text_content()))
                        .collect(),
                );
            }
        }
    }
    r
}

/// A signed request by root; the reply read.
async fn call(server: &GoldServer, action: &str, object: &str, parts: &str) -> Reply {
    let r = send_body(server, &body(action, object, parts)).await;
    assert_eq!(r.actor, "root");
    r
}

/// A signed request by root that must succeed with 000.
async fn ok(server: &GoldServer, action: &str, object: &str, parts: &str) -> Reply {
    let r = call(server, action, object, parts).await;
    r.assert_ok("000");
    r
}

/// A signed request by root that must fail with `code` and a message containing `message`.
async fn refused(
    server: &GoldServer,
    action: &str,
    object: &str,
    parts: &str,
    code: &str,
    message: &str,
) {
    call(server, action, object, parts)
        .await
        .assert_failed(code, message);
}

async fn send_body(server: &GoldServer, body: &str) -> Reply {
    read_reply(&exchange(server, &post(&signed_with(body, KEY))).await)
}

/// The names of the test's own objects (Gold's pseudo-users and pseudo-projects, which every
/// Gold has, are left out here and checked in `every_gold_has_its_pseudo_objects`).
fn names(rows: &[BTreeMap<String, String>]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["Name"].as_str())
        .filter(|n| !PSEUDO_NAMES.contains(n))
        .collect()
}

fn last_log(server: &GoldServer) -> LogEntry {
    server.log().pop().expect("a log entry")
}

#[tokio::test]
async fn the_notes_test_vector_is_accepted() {
    let s = server().await;
    let b = "<Body><Request action=\"Create\" actor=\"root\"><Object>User</Object><Set name=\"Name\">bob</Set></Request></Body>";
    assert_eq!(b.len(), 108);
    let m = message(
        b,
        "PpHlkPa0s4WT6XJLL4qmJiIN+IM=",
        "lBo9OZE1BXdfXzOzmE+sLG9oRcA=",
    );
    let r = read_reply(&exchange(&s, &post(&m)).await);
    r.assert_ok("000");
    assert_eq!(r.count(), 1);
    assert_eq!(names(&r.rows), ["bob"]);
    assert_eq!(r.rows[0]["Active"], "True");
    assert_eq!(names(&s.rows("User")), ["bob"]);
    assert_eq!(
        s.log(),
        [LogEntry {
            action: "Create".into(),
            objects: vec!["User".into()],
            actor: "root".into(),
            code: "000".into(),
            signed: true,
        }]
    );
}

#[tokio::test]
async fn bad_signatures_get_424_and_change_nothing() {
    let s = server().await;
    let b = body("Create", "User", "<Set name=\"Name\">eve</Set>");
    let unsigned = format!("{DECLARATION}<Envelope>{b}</Envelope>");
    let (_, good_mac) = sign(b.as_bytes(), KEY);
    let (other_digest, _) = sign(b"<Body></Body>", KEY);
    let wrong_digest = message(&b, &other_digest, &good_mac);
    let wrong_key = signed_with(&b, "not-the-key");
    // Signed as sent, but not in the form libxml2 re-serializes (`<X/>`): the digest differs.
    let self_closing = "<Body><Request action=\"Query\" actor=\"root\"><Object>User</Object><Get name=\"Name\"/></Request></Body>";
    for (payload, problem) in [
        (unsigned, "Message not signed"),
        (
            wrong_digest,
            "Incoming digest does not match calculated digest",
        ),
        (wrong_key, "Incoming MAC does not match calculated MAC"),
        (
            signed_with(self_closing, KEY),
            "Incoming digest does not match calculated digest",
        ),
    ] {
        read_reply(&exchange(&s, &post(&payload)).await).assert_failed("424", problem);
        let entry = last_log(&s);
        assert_eq!((entry.code.as_str(), entry.signed), ("424", false));
        assert_eq!(entry.actor, "root");
    }
    assert_eq!(s.log()[0].action, "Create");
    assert!(s.rows("User").is_empty());
}

#[tokio::test]
async fn latin1_characters_are_hashed_as_latin1() {
    let s = server().await;
    let b = body(
        "Create",
        "User",
        "<Set name=\"Name\">jose</Set><Set name=\"CommonName\">José</Set>",
    );
    // Signed over the UTF-8 bytes: Gold hashes Latin-1, so this does not verify.
    send_body(&s, &b)
        .await
        .assert_failed("424", "Incoming digest does not match");
    let latin1: Vec<u8> = b.chars().map(|c| c as u8).collect();
    let (digest, mac) = sign(&latin1, KEY);
    let r = read_reply(&exchange(&s, &post(&message(&b, &digest, &mac))).await);
    r.assert_ok("000");
    assert_eq!(s.rows("User")[0]["CommonName"], "José");
}

#[tokio::test]
async fn actors_outside_the_allowed_set_get_444() {
    let s = server().await;
    let b = "<Body><Request action=\"Create\" actor=\"mallory\"><Object>User</Object><Set name=\"Name\">m</Set></Request></Body>";
    let raw = exchange(&s, &post(&signed_with(b, KEY))).await;
    let text = String::from_utf8(raw).unwrap();
    assert!(
        text.contains("<Response actor=\"mallory\"><Status><Value>Failure</Value><Code>444</Code>")
    );
    let entry = last_log(&s);
    assert_eq!((entry.code.as_str(), entry.signed), ("444", true));
    assert_eq!(entry.actor, "mallory");
    assert!(s.rows("User").is_empty());
}

#[tokio::test]
async fn http_level_refusals() {
    let s = server().await;
    let payload = signed_with(&body("Create", "User", "<Set name=\"Name\">x</Set>"), KEY);
    let chunk = format!("{:x}\r\n{payload}0\r\n", payload.len());
    let cases = [
        ("GET /SSSRMAP3 HTTP/1.1\r\n\r\n".to_string(), "405"),
        (
            format!(
                "POST /other HTTP/1.1\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
            ),
            "404",
        ),
        (
            format!(
                "POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
            ),
            "412",
        ),
        (
            format!(
                "POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{payload}",
                payload.len()
            ),
            "400",
        ),
        (
            "POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_string(),
            "400",
        ),
        // A chunk announcing more than 4 MiB is refused before it is read.
        (
            "POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n400001\r\n"
                .to_string(),
            "400",
        ),
    ];
    for (request, status) in &cases {
        let raw = exchange(&s, request.as_bytes()).await;
        let text = String::from_utf8(raw).unwrap();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?} got {text:?}"
        );
        let entry = last_log(&s);
        assert_eq!(
            (entry.code.as_str(), entry.action.as_str(), entry.signed),
            (*status, "", false)
        );
    }
    assert!(s.rows("User").is_empty());
    // A port probe (connect, close) is neither answered nor logged.
    let mut probe = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    probe.shutdown().await.unwrap();
    let mut nothing = Vec::new();
    probe.read_to_end(&mut nothing).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(s.log().len(), cases.len());
    // Both URI prefixes are served; RFC-correct chunking (CRLF after data, two chunks, final
    // CRLF) is accepted too.
    let (a, b) = payload.split_at(40);
    let rfc = format!(
        "POST /gold HTTP/1.1\r\ncontent-type: text/xml\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    read_reply(&exchange(&s, rfc.as_bytes()).await).assert_ok("000");
    assert_eq!(names(&s.rows("User")), ["x"]);
}

#[tokio::test]
async fn gold_level_protocol_errors() {
    let s = server().await;
    let cases = [
        (
            "<Body><Request action=\"Query\" actor=\"root\"><Object>User</Object></Body>",
            "242",
        ),
        (
            "<Body><Request actor=\"root\"><Object>User</Object></Request></Body>",
            "312",
        ),
        (
            "<Body><Request action=\"Query\"><Object>User</Object></Request></Body>",
            "312",
        ),
        (
            "<Body><Request action=\"Query\" actor=\"root\"></Request></Body>",
            "311",
        ),
        (
            "<Body><Request action=\"Query\" actor=\"root\"><Object>Nonsense</Object></Request></Body>",
            "311",
        ),
        (
            "<Body><Request action=\"Deposit\" actor=\"root\"><Object>User</Object></Request></Body>",
            "312",
        ),
    ];
    for (b, code) in cases {
        let r = send_body(&s, b).await;
        assert_eq!(
            (r.value.as_str(), r.code.as_str()),
            ("Failure", code),
            "{b}"
        );
    }
}

#[tokio::test]
async fn reply_framing_is_golds_own() {
    let s = server().await;
    let raw = exchange(
        &s,
        &post(&signed_with(&body("Query", "Organization", ""), KEY)),
    )
    .await;
    let piece = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Envelope><Body><Response actor=\"root\"><Status><Value>Success</Value><Code>000</Code><Message></Message></Status><Count>0</Count><Data></Data></Response></Body></Envelope>";
    // The whole reply, byte for byte: no CRLF after the data, a bare 0\r\n, then EOF (the
    // exchange read to the end, so the server closed the connection).
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        format!("{REPLY_HEAD}{:x}\r\n{piece}0\r\n", piece.len())
    );
}

#[tokio::test]
async fn users_projects_and_memberships() {
    let s = server().await;
    ok(
        &s,
        "Create",
        "Project",
        "<Set name=\"Name\">biology</Set><Set name=\"Description\">Cells</Set>",
    )
    .await;
    for u in ["bob", "amy"] {
        ok(
            &s,
            "Create",
            "User",
            &format!("<Set name=\"Name\">{u}</Set><Set name=\"DefaultProject\">biology</Set><Set name=\"EmailAddress\">{u}@example.org</Set>"),
        ).await;
    }
    ok(
        &s,
        "Create",
        "ProjectUser",
        "<Set name=\"Project\">biology</Set><Set name=\"Name\">bob</Set>",
    )
    .await;
    ok(&s, "Create", "ProjectUser", "<Set name=\"Project\">biology</Set><Set name=\"Name\">amy</Set><Set name=\"Admin\">True</Set>").await;

    // Rows in key order; all attributes without Get, empty ones as <X></X>.
    let r = ok(&s, "Query", "User", "").await;
    assert_eq!(names(&r.rows), ["amy", "bob"]);
    assert_eq!(r.count(), 2 + PSEUDO_NAMES.len());
    assert!(r.raw.contains("<User><Name>amy</Name><Active>True</Active><CommonName></CommonName><PhoneNumber></PhoneNumber><EmailAddress>amy@example.org</EmailAddress><DefaultProject>biology</DefaultProject><Organization></Organization><Description></Description></User>"));
    let r = call(&s, "Query", "User", "<Get name=\"EmailAddress\"></Get><Get name=\"Name\"></Get><Where name=\"Name\">bob</Where>").await;
    assert_eq!(r.rows.len(), 1);
    assert_eq!(
        r.rows[0].keys().collect::<Vec<_>>(),
        ["EmailAddress", "Name"]
    );
    assert!(
        r.raw
            .contains("<User><EmailAddress>bob@example.org</EmailAddress><Name>bob</Name></User>")
    );
    let members = call(
        &s,
        "Query",
        "ProjectUser",
        "<Where name=\"Project\">biology</Where>",
    )
    .await;
    assert_eq!(names(&members.rows), ["amy", "bob"]);
    assert_eq!(members.column("Admin"), ["True", "False"]);

    // Suspend a member, deactivate a user.
    let r = ok(&s, "Modify", "ProjectUser", "<Set name=\"Active\">False</Set><Where name=\"Project\">biology</Where><Where name=\"Name\">bob</Where>").await;
    assert_eq!(r.count(), 1);
    assert_eq!(r.column("Active"), ["False"]);
    let r = call(
        &s,
        "Modify",
        "User",
        "<Set name=\"Active\">False</Set><Where name=\"Name\">bob</Where>",
    )
    .await;
    assert_eq!(r.count(), 1);
    assert_eq!(s.rows("User")[1]["Active"], "False");

    // Remove a member; delete a user (080); deleted objects are hidden.
    let r = ok(
        &s,
        "Delete",
        "ProjectUser",
        "<Where name=\"Project\">biology</Where><Where name=\"Name\">amy</Where>",
    )
    .await;
    assert_eq!(r.count(), 1);
    assert_eq!(names(&s.rows("ProjectUser")), ["bob"]);
    let r = call(&s, "Delete", "User", "<Where name=\"Name\">bob</Where>").await;
    r.assert_ok("080");
    assert_eq!(r.count(), 1);
    assert_eq!(names(&call(&s, "Query", "User", "").await.rows), ["amy"]);
    let hidden = call(
        &s,
        "Query",
        "User",
        "<Option name=\"ShowHidden\">True</Option>",
    )
    .await;
    assert_eq!(names(&hidden.rows), ["amy", "bob"]);
    let deleted: Vec<&str> = hidden
        .rows
        .iter()
        .filter(|r| !PSEUDO_NAMES.contains(&r["Name"].as_str()))
        .map(|r| r["Deleted"].as_str())
        .collect();
    assert_eq!(deleted, ["False", "True"]);

    // Undelete brings bob back as he was.
    let r = ok(&s, "Undelete", "User", "<Where name=\"Name\">bob</Where>").await;
    assert_eq!(r.count(), 1);
    assert_eq!(names(&s.rows("User")), ["amy", "bob"]);
    assert_eq!(s.rows("User")[1]["Active"], "False");
}

#[tokio::test]
async fn rule_violations_types_and_attribute_names() {
    let s = server().await;
    ok(&s, "Create", "User", "<Set name=\"Name\">bob</Set>").await;
    refused(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">bob</Set>",
        "740",
        "already exists",
    )
    .await;
    refused(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">amy</Set><Set name=\"DefaultProject\">nowhere</Set>",
        "740",
        "Project nowhere does not exist",
    )
    .await;
    refused(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">amy</Set><Set name=\"Organization\">ACME</Set>",
        "740",
        "Organization ACME does not exist",
    )
    .await;
    ok(&s, "Create", "Project", "<Set name=\"Name\">p</Set>").await;
    refused(
        &s,
        "Create",
        "ProjectUser",
        "<Set name=\"Project\">p</Set><Set name=\"Name\">ghost</Set>",
        "740",
        "User ghost does not exist",
    )
    .await;
    refused(
        &s,
        "Create",
        "ProjectUser",
        "<Set name=\"Project\">q</Set><Set name=\"Name\">bob</Set>",
        "740",
        "Project q does not exist",
    )
    .await;
    refused(
        &s,
        "Modify",
        "User",
        "<Set name=\"DefaultProject\">nowhere</Set><Where name=\"Name\">bob</Where>",
        "740",
        "does not exist",
    )
    .await;
    refused(
        &s,
        "Create",
        "User",
        "<Set name=\"Active\">True</Set>",
        "740",
        "Name must be specified",
    )
    .await;
    // A deleted project is no valid DefaultProject.
    ok(&s, "Delete", "Project", "<Where name=\"Name\">p</Where>").await;
    refused(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">amy</Set><Set name=\"DefaultProject\">p</Set>",
        "740",
        "Project p does not exist",
    )
    .await;
    // Once the referenced objects exist, the same requests pass.
    ok(
        &s,
        "Create",
        "Organization",
        "<Set name=\"Name\">ACME</Set>",
    )
    .await;
    ok(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">amy</Set><Set name=\"Organization\">ACME</Set>",
    )
    .await;

    // Types (317) and case-sensitive attribute names (318).
    refused(
        &s,
        "Modify",
        "User",
        "<Set name=\"Active\">yes</Set><Where name=\"Name\">bob</Where>",
        "317",
        "boolean",
    )
    .await;
    refused(
        &s,
        "Query",
        "User",
        "<Where name=\"Active\">true</Where>",
        "317",
        "boolean",
    )
    .await;
    refused(
        &s,
        "Query",
        "User",
        "<Where name=\"name\">bob</Where>",
        "318",
        "name",
    )
    .await;
    refused(
        &s,
        "Query",
        "User",
        "<Get name=\"Shell\"></Get>",
        "318",
        "Shell",
    )
    .await;
    refused(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">cy</Set><Set name=\"Color\">red</Set>",
        "318",
        "Color",
    )
    .await;
    refused(
        &s,
        "Modify",
        "User",
        "<Set name=\"Name\">robert</Set><Where name=\"Name\">bob</Where>",
        "740",
        "cannot be modified",
    )
    .await;
    assert_eq!(names(&s.rows("User")), ["amy", "bob"]);
}

#[tokio::test]
async fn modify_and_delete_of_missing_objects_count_zero() {
    let s = server().await;
    let r = ok(
        &s,
        "Modify",
        "User",
        "<Set name=\"Active\">False</Set><Where name=\"Name\">nobody</Where>",
    )
    .await;
    assert_eq!(r.count(), 0);
    assert!(r.rows.is_empty());
    let r = ok(
        &s,
        "Delete",
        "ProjectUser",
        "<Where name=\"Project\">x</Where><Where name=\"Name\">y</Where>",
    )
    .await;
    assert_eq!(r.count(), 0);
    let r = call(&s, "Delete", "User", "<Where name=\"Name\">nobody</Where>").await;
    assert_eq!((r.code.as_str(), r.count()), ("080", 0));
}

#[tokio::test]
async fn creating_a_deleted_object_undeletes_it() {
    let s = server().await;
    ok(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">bob</Set><Set name=\"CommonName\">Bob B</Set>",
    )
    .await;
    call(&s, "Delete", "User", "<Where name=\"Name\">bob</Where>")
        .await
        .assert_ok("080");
    assert!(s.rows("User").is_empty());
    // Succeeds (no "already exists") and applies the Sets.
    ok(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">bob</Set><Set name=\"Active\">False</Set>",
    )
    .await;
    let rows = s.rows("User");
    assert_eq!(names(&rows), ["bob"]);
    assert_eq!(
        (rows[0]["CommonName"].as_str(), rows[0]["Active"].as_str()),
        ("Bob B", "False")
    );
    // Only one bob, also among the hidden.
    let all = call(
        &s,
        "Query",
        "User",
        "<Option name=\"ShowHidden\">True</Option>",
    )
    .await;
    assert_eq!(names(&all.rows), ["bob"]);
}

/// Gold 2.2's accounts: `Project Create` makes a new account named after the project, links it
/// through `AccountProject` and gives it a 0-credit allocation (`account.autogen`,
/// `allocation.autogen`); a deposit's Description lands on its transaction; `Project Delete`
/// unlinks the account and leaves it, with its allocations; re-creating the project makes
/// another account of the same name.
#[tokio::test]
async fn project_accounts_and_deposits() {
    let s = server().await;
    for p in ["biology", "chemistry"] {
        ok(
            &s,
            "Create",
            "Project",
            &format!("<Set name=\"Name\">{p}</Set><Option name=\"AccountUsers\">MEMBERS</Option>"),
        )
        .await;
    }
    let accounts = s.rows("Account");
    assert_eq!(names(&accounts), ["biology", "chemistry"]);
    assert_eq!(accounts[0]["Id"], "1");
    assert_eq!(accounts[1]["Active"], "True");
    let r = call(
        &s,
        "Query",
        "AccountProject",
        "<Get name=\"Account\"></Get><Where name=\"Name\">chemistry</Where>",
    )
    .await;
    assert_eq!(r.column("Account"), ["2"]);
    let r = call(&s, "Query", "Allocation", "").await;
    assert_eq!(
        r.column("Account"),
        ["1", "2"],
        "one autogen allocation each"
    );
    assert_eq!(r.column("Amount"), ["0", "0"]);

    let deposit = |amount: u32, start: &str, end: &str| {
        format!(
            "<Option name=\"Id\">2</Option><Option name=\"Amount\">{amount}</Option><Option name=\"StartTime\">{start}</Option><Option name=\"EndTime\">{end}</Option><Option name=\"Description\">grant</Option>"
        )
    };
    let r = ok(
        &s,
        "Deposit",
        "Account",
        &deposit(100, "1000", "2100000000"),
    )
    .await;
    assert_eq!(r.count(), 1);
    assert!(
        r.raw
            .contains("<Data><Allocation><Id>3</Id><Account>2</Account>"),
        "{}",
        r.raw
    );
    assert_eq!(
        (
            r.rows[0]["Amount"].as_str(),
            r.rows[0]["Deposited"].as_str(),
            r.rows[0]["Active"].as_str()
        ),
        ("100", "100", "True")
    );
    // The same window adds to the same allocation; another window makes a new one.
    let r = call(&s, "Deposit", "Account", &deposit(50, "1000", "2100000000")).await;
    assert_eq!(
        (
            r.rows[0]["Id"].as_str(),
            r.rows[0]["Amount"].as_str(),
            r.rows[0]["Deposited"].as_str()
        ),
        ("3", "150", "150")
    );
    let r = call(&s, "Deposit", "Account", &deposit(7, "1000", "2000")).await;
    assert_eq!(
        (r.rows[0]["Id"].as_str(), r.rows[0]["Active"].as_str()),
        ("4", "False")
    );
    let r = call(
        &s,
        "Query",
        "Allocation",
        "<Where name=\"Account\">2</Where>",
    )
    .await;
    assert_eq!(r.column("Id"), ["2", "3", "4"]);
    assert_eq!(r.column("Amount"), ["0", "150", "7"]);
    // The description is the transaction's, not the allocation's.
    assert_eq!(r.column("Description"), ["", "", ""]);
    let t = call(
        &s,
        "Query",
        "Transaction",
        "<Where name=\"Account\">2</Where>",
    )
    .await;
    assert_eq!(t.column("Description"), ["grant", "grant", "grant"]);
    assert_eq!(t.column("Amount"), ["100", "50", "7"]);
    let r = call(
        &s,
        "Query",
        "Allocation",
        "<Where name=\"Active\">True</Where>",
    )
    .await;
    assert_eq!(r.column("Id"), ["1", "2", "3"]);

    refused(
        &s,
        "Deposit",
        "Account",
        "<Option name=\"Id\">9</Option><Option name=\"Amount\">5</Option>",
        "740",
        "Account 9 does not exist",
    )
    .await;
    refused(
        &s,
        "Deposit",
        "Account",
        "<Option name=\"Amount\">5</Option>",
        "740",
        "Id",
    )
    .await;
    refused(
        &s,
        "Deposit",
        "Account",
        "<Option name=\"Id\">2</Option><Option name=\"Amount\">lots</Option>",
        "317",
        "integer",
    )
    .await;
    assert_eq!(s.rows("Allocation").len(), 4);

    // A purge unlinks the account and leaves it; the project created again gets another.
    ok(
        &s,
        "Delete",
        "Project",
        "<Where name=\"Name\">chemistry</Where>",
    )
    .await;
    assert!(
        s.rows("AccountProject")
            .iter()
            .all(|r| r["Name"] != "chemistry")
    );
    assert_eq!(s.rows("Allocation").len(), 4, "its allocations stay");
    ok(
        &s,
        "Create",
        "Project",
        "<Set name=\"Name\">chemistry</Set>",
    )
    .await;
    let chemistry: Vec<String> = s
        .rows("Account")
        .into_iter()
        .filter(|a| a["Name"] == "chemistry")
        .map(|a| a["Id"].clone())
        .collect();
    assert_eq!(chemistry, ["2", "3"]);
    let r = call(
        &s,
        "Query",
        "AccountProject",
        "<Get name=\"Account\"></Get><Where name=\"Name\">chemistry</Where>",
    )
    .await;
    assert_eq!(r.column("Account"), ["3"], "only the new account is linked");
}

/// Gold 2.2 pastes values into its SQL as `'value'` without escaping: a quote is a syntax
/// error (720, the driver's message), and a value that closes the string and compares is
/// evaluated — the boolean is stored.
#[tokio::test]
async fn values_are_pasted_into_sql_unescaped() {
    let s = server().await;
    refused(
        &s,
        "Create",
        "User",
        "<Set name=\"Name\">obrien</Set><Set name=\"CommonName\">Pat O'Brien</Set>",
        "720",
        "syntax error at or near \"Brien\"",
    )
    .await;
    assert!(s.rows("User").is_empty(), "nothing was created");
    ok(
        &s,
        "Create",
        "Project",
        "<Set name=\"Name\">p</Set><Set name=\"Description\">x' &lt; 'y</Set>",
    )
    .await;
    assert_eq!(s.rows("Project")[0]["Description"], "true");
    refused(
        &s,
        "Query",
        "User",
        "<Where name=\"Name\">a'b</Where>",
        "720",
        "syntax error",
    )
    .await;
}

/// Gold's pseudo-users and pseudo-projects come back from every query of users and projects.
#[tokio::test]
async fn every_gold_has_its_pseudo_objects() {
    let s = server().await;
    for object in ["User", "Project"] {
        let r = call(&s, "Query", object, "<Get name=\"Name\"></Get>").await;
        let mut got = r.column("Name");
        got.sort();
        assert_eq!(got, ["ADMIN", "ANY", "MEMBERS", "NONE", "SELF"], "{object}");
    }
}

/// The Bank module's chunking bug: an Account or Allocation query asked in chunks that fills a
/// piece gets piece 1 again and again (`chunkMax="-1"`), never the rest, until the client hangs
/// up. Unchunked, the same query answers in one piece.
#[tokio::test]
async fn chunked_account_and_allocation_queries_never_end() {
    let s = server().await;
    for i in 0..4 {
        ok(
            &s,
            "Create",
            "Project",
            &format!("<Set name=\"Name\">p{i}</Set>"),
        )
        .await;
    }
    for object in ["Account", "Allocation"] {
        let b = format!(
            "<Body><Request action=\"Query\" actor=\"root\" chunking=\"True\"><Object>{object}</Object></Request></Body>"
        );
        let mut stream = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
        stream
            .write_all(&post(&signed_with(&b, KEY)))
            .await
            .unwrap();
        let mut got = vec![];
        let mut buf = [0u8; 65536];
        // Ten times more than the whole answer could be, and still no end.
        while got.len() < 40_000 {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("the server keeps sending")
                .unwrap();
            assert!(
                n > 0,
                "the server ended the reply: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.matches("chunkNum=\"1\" chunkMax=\"-1\"").count() > 3,
            "{object}"
        );
        assert!(!text.contains("chunkNum=\"2\""), "{object}");
        drop(stream);
        let r = call(&s, "Query", object, "").await;
        assert_eq!(r.counts, [Some(4)], "{object} unchunked");
    }
}

/// An actor whose roles allow queries only: its signed queries succeed, its writes get 444.
#[tokio::test]
async fn a_read_only_actor_gets_444_on_writes() {
    let s = GoldServer::start(
        "127.0.0.1:0",
        Options {
            readers: vec!["viewer".into()],
            ..Options::new(KEY)
        },
    )
    .await
    .unwrap();
    let as_viewer = |action: &str, object: &str, inner: &str| {
        format!(
            "<Body><Request action=\"{action}\" actor=\"viewer\"><Object>{object}</Object>{inner}</Request></Body>"
        )
    };
    let r = send_body(&s, &as_viewer("Query", "User", "")).await;
    r.assert_ok("000");
    let r = send_body(
        &s,
        &as_viewer(
            "Modify",
            "User",
            "<Set name=\"Description\">x</Set><Where name=\"Name\">nobody</Where>",
        ),
    )
    .await;
    r.assert_failed("444", "not authorized");
}

#[tokio::test]
async fn allocations_can_be_modified() {
    let s = server().await;
    ok(&s, "Create", "Project", "<Set name=\"Name\">p</Set>").await;
    ok(
        &s,
        "Deposit",
        "Account",
        "<Option name=\"Id\">1</Option><Option name=\"Amount\">10</Option>",
    )
    .await;
    let r = ok(&s, "Modify", "Allocation", "<Set name=\"Amount\">25</Set><Set name=\"EndTime\">1000</Set><Set name=\"Description\">cut</Set><Where name=\"Id\">1</Where>").await;
    assert_eq!(r.count(), 1);
    let a = &s.rows("Allocation")[0];
    assert_eq!(
        (
            a["Amount"].as_str(),
            a["EndTime"].as_str(),
            a["Description"].as_str(),
            a["Active"].as_str()
        ),
        ("25", "1000", "cut", "False")
    );
    let r = call(
        &s,
        "Modify",
        "Allocation",
        "<Set name=\"Amount\" op=\"Inc\">5</Set><Where name=\"Id\">1</Where>",
    )
    .await;
    assert_eq!(r.column("Amount"), ["30"]);
    refused(
        &s,
        "Modify",
        "Allocation",
        "<Set name=\"StartTime\">soon</Set><Where name=\"Id\">1</Where>",
        "317",
        "time",
    )
    .await;
    refused(
        &s,
        "Modify",
        "Allocation",
        "<Set name=\"Active\">True</Set><Where name=\"Id\">1</Where>",
        "740",
        "computed",
    )
    .await;
    refused(
        &s,
        "Modify",
        "Allocation",
        "<Set name=\"Account\">7</Set><Where name=\"Id\">1</Where>",
        "740",
        "Account 7 does not exist",
    )
    .await;
}

#[tokio::test]
async fn where_operators_conjunctions_limit_and_offset() {
    let s = server().await;
    for (u, active) in [
        ("ann", "True"),
        ("ben", "False"),
        ("bob", "True"),
        ("cyd", "True"),
    ] {
        ok(
            &s,
            "Create",
            "User",
            &format!("<Set name=\"Name\">{u}</Set><Set name=\"Active\">{active}</Set>"),
        )
        .await;
    }
    let q = |parts: &'static str| {
        let s = &s;
        async move { call(s, "Query", "User", parts).await }
    };
    assert_eq!(
        names(&q("<Where name=\"Name\" op=\"Match\">b*</Where>").await.rows),
        ["ben", "bob"]
    );
    assert_eq!(
        names(
            &q("<Where name=\"Name\" op=\"Match\">?o?</Where>")
                .await
                .rows
        ),
        ["bob"]
    );
    assert_eq!(
        names(&q("<Where name=\"Name\" op=\"NE\">bob</Where>").await.rows),
        ["ann", "ben", "cyd"]
    );
    assert_eq!(
        names(&q("<Where name=\"Name\" op=\"GE\">bob</Where>").await.rows),
        ["bob", "cyd"]
    );
    assert_eq!(
        names(
            &q("<Where name=\"Name\">ann</Where><Where name=\"Name\" conj=\"Or\">cyd</Where>")
                .await
                .rows
        ),
        ["ann", "cyd"]
    );
    assert_eq!(
        names(
            &q("<Where name=\"Name\" op=\"Match\">b*</Where><Where name=\"Active\">True</Where>")
                .await
                .rows
        ),
        ["bob"]
    );
    assert_eq!(
        names(
            // (GE a: after Gold's upper-case pseudo-users.)
            &q("<Where name=\"Name\" op=\"GE\">a</Where><Option name=\"Limit\">2</Option><Option name=\"Offset\">1</Option>")
                .await
                .rows
        ),
        ["ben", "bob"]
    );
    q("<Option name=\"Limit\">-1</Option>")
        .await
        .assert_failed("317", "Limit");
    q("<Where name=\"Name\" op=\"Like\">b%</Where>")
        .await
        .assert_failed("317", "operator");
}

#[tokio::test]
async fn chunked_queries_come_in_pieces() {
    let s = server().await;
    for i in 0..7 {
        ok(
            &s,
            "Create",
            "User",
            &format!("<Set name=\"Name\">u{i}</Set>"),
        )
        .await;
    }
    let b = "<Body><Request action=\"Query\" actor=\"root\" chunking=\"True\"><Object>User</Object><Get name=\"Name\"></Get></Request></Body>";
    let r = send_body(&s, b).await;
    r.assert_ok("000");
    // Seven users and Gold's five pseudo-users: 3 + 3 + 3 + 3.
    assert_eq!(r.counts, [Some(3), Some(3), Some(3), Some(3)]);
    let chunk = |n: &str, max: Option<&str>| (Some(n.to_string()), max.map(String::from));
    assert_eq!(
        r.chunks,
        [
            chunk("1", Some("-1")),
            chunk("2", Some("-1")),
            chunk("3", Some("-1")),
            chunk("4", None)
        ]
    );
    assert_eq!(names(&r.rows), ["u0", "u1", "u2", "u3", "u4", "u5", "u6"]);
    // Without chunking: one piece with every row.
    let r = call(&s, "Query", "User", "").await;
    assert_eq!(r.counts, [Some(12)]);
    assert_eq!(r.chunks, [(None, None)]);
}

#[tokio::test]
async fn a_dropped_reply_still_performs_the_action() {
    let s = server().await;
    ok(&s, "Create", "Project", "<Set name=\"Name\">p</Set>").await;
    s.drop_next_reply("Deposit");
    let deposit = "<Option name=\"Id\">1</Option><Option name=\"Amount\">10</Option>";
    // A Query is not a Deposit: answered as usual.
    ok(&s, "Query", "Account", "").await;
    let raw = exchange(
        &s,
        &post(&signed_with(&body("Deposit", "Account", deposit), KEY)),
    )
    .await;
    assert!(
        raw.is_empty(),
        "no reply: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(s.rows("Allocation")[0]["Amount"], "10");
    assert_eq!(last_log(&s).code, "000");
    // Used up: the next Deposit is answered (and merges).
    let r = call(&s, "Deposit", "Account", deposit).await;
    assert_eq!(r.column("Amount"), ["20"]);
}

#[tokio::test]
async fn xml_metacharacters_round_trip() {
    let s = server().await;
    // (A single quote is SQL to Gold: see values_are_pasted_into_sql_unescaped.)
    let escaped = "R&amp;D &lt;lab&gt; \"quoted\"";
    let raw_text = "R&D <lab> \"quoted\"";
    ok(
        &s,
        "Create",
        "User",
        &format!("<Set name=\"Name\">bob</Set><Set name=\"Description\">{escaped}</Set>"),
    )
    .await;
    assert_eq!(s.rows("User")[0]["Description"], raw_text);
    let r = call(
        &s,
        "Query",
        "User",
        &format!("<Where name=\"Description\">{escaped}</Where>"),
    )
    .await;
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.rows[0]["Description"], raw_text);
    assert!(
        r.raw
            .contains(&format!("<Description>{escaped}</Description>"))
    );
    // In attribute values too: an actor with a quote is escaped as &quot; in the Response.
    let b =
        "<Body><Request action=\"Query\" actor=\"a&quot;b\"><Object>User</Object></Request></Body>";
    let raw = String::from_utf8(exchange(&s, &post(&signed_with(b, KEY))).await).unwrap();
    assert!(
        raw.contains("<Response actor=\"a&quot;b\"><Status><Value>Failure</Value><Code>444</Code>"),
        "{raw}"
    );
}

/// The binary: address on stdout, JSON-lines log, control directory.
#[tokio::test]
async fn the_binary_logs_json_lines_and_obeys_the_control_dir() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gold-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("auth_key"),
        format!("{KEY}\nignored second line\n"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster-gold-server"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--actor",
            "root",
            "--auth-key-file",
        ])
        .arg(dir.join("auth_key"))
        .arg("--log")
        .arg(dir.join("requests.jsonl"))
        .arg("--control-dir")
        .arg(dir.join("control"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("an address line")
    .unwrap();
    let addr: std::net::SocketAddr = line.trim().parse().expect("line 1 is the address");
    let send = |b: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&post(&signed_with(&b, KEY))).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let r = read_reply(&send(body("Create", "User", "<Set name=\"Name\">bob</Set>")).await);
    r.assert_ok("000");
    std::fs::write(dir.join("control/drop-next-Create"), "").unwrap();
    assert!(
        send(body("Create", "User", "<Set name=\"Name\">amy</Set>"))
            .await
            .is_empty()
    );
    assert!(!dir.join("control/drop-next-Create").exists(), "used up");
    let r = read_reply(&send(body("Query", "User", "<Get name=\"Name\"></Get>")).await);
    assert_eq!(names(&r.rows), ["amy", "bob"]);
    let log = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 3);
    assert_eq!(
        entries[0],
        serde_json::json!({"action": "Create", "objects": ["User"], "actor": "root", "code": "000", "signed": true})
    );
    assert_eq!(entries[2]["action"], "Query");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
