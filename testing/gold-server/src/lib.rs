//! A Gold 2.2 stand-in for tests: the SSSRMAP wire protocol and the part of Gold's object model
//! Roster uses, written from `gold-sssrmap.md` (the note checked against a live Gold 2.2.0.5).
//!
//! It is strict where Gold is strict: only signed requests (HMAC-SHA1 over the SHA-1 of the
//! `<Body>` as libxml2 re-serializes it, hashed as Latin-1) from allowed actors are performed,
//! requests must come in Gold's framing, and replies go out in Gold's own non-standard chunking.
//! Every request, also a refused one, is logged ([`LogEntry`]).
//!
//! # Transport
//!
//! One request per connection: the HTTP head, then the chunked payload (`<hex>\r\n<payload>`
//! followed by `0\r\n`, or RFC-style with a CRLF after the data and after the last chunk). At
//! most [`MAX_BODY`] bytes of payload; the whole request must arrive within [`READ_TIMEOUT`].
//! HTTP-level refusals (the note: "only malformed messages get 400/404/405/412"):
//!
//! | problem                                             | status |
//! |-----------------------------------------------------|--------|
//! | method other than POST                              | 405    |
//! | URI not starting with `/SSSRMAP` or `/gold`          | 404    |
//! | Content-Type missing or its media type not text/xml | 412    |
//! | no `Transfer-Encoding: chunked` (Content-Length too) | 400    |
//! | malformed head or chunk framing, body too large, request cut short or too slow | 400 |
//!
//! They are logged with the HTTP status as `code` and an empty action. A connection that
//! closes (or times out) before sending a single byte — a port probe — is neither answered nor
//! logged.
//!
//! # Gold-level statuses (always HTTP 200)
//!
//! 242 the payload is not UTF-8 or not well-formed, or lacks `Envelope`/`Body`/`Request`, or
//! the Request has an element other than Object/Get/Set/Where/Option; 424 signature problems
//! (the note's three messages); 312 no action or actor, or an action that is not valid for the
//! object; 311 no object, or an unknown one; 444 an actor outside [`Options::actors`]; 318 an
//! unknown attribute (attribute names are case-sensitive); 317 a value of the wrong type, an
//! unknown `op`/`conj`, unbalanced `group`s; 740 business rules (already exists, references to
//! missing objects, missing key, keys and computed attributes cannot be set, deposit rules);
//! 720 what this test server does not implement (joins, `Get` with an `op`) and bodies with
//! characters above U+00FF, which real Gold cannot hash either.
//!
//! # What Gold 2.2.0.5 gets wrong, done here too (notes/gold-sssrmap.md)
//!
//! - Values are pasted into SQL as `'value'` unescaped: a `'` in a `Set`, `Where` or deposit
//!   description is 720 with the driver's message, and `x' < 'y` is evaluated and the boolean
//!   stored (`sql_literal`).
//! - `Project Create` always makes a new account named after the project, linked through
//!   `AccountProject`, with a 0-credit allocation; `Project Delete` unlinks and leaves the
//!   account and its allocations.
//! - A chunked Account or Allocation query that fills a piece gets piece 1 again and again
//!   (`chunkMax="-1"`), never the rest.
//! - The pseudo-users and pseudo-projects `ANY`, `MEMBERS`, `NONE`, `SELF`, `ADMIN` exist.
//! - An actor in [`Options::readers`] may query; its writes get 444.
//!
//! # Choices where the note is silent
//!
//! - `Where` without `op` (or `EQ`) is equality; `NE`, `GT`, `LT`, `GE`, `LE` compare numbers
//!   numerically and text byte-wise; `Match` is SQL `LIKE` as Gold generates it from a glob:
//!   anchored, `*` or `%` any run of characters, `?` or `_` one character.
//! - Conditions combine as Gold's generated SQL does: `NOT` binds tighter than `AND`, `AND`
//!   tighter than `OR`; `group="+1"`/`"-1"` open/close parentheses; `conj` on the first
//!   condition only counts for its `Not`.
//! - `Option ShowHidden=True` shows soft-deleted objects and the hidden `Deleted` column.
//! - Create and Deposit reply with the created row, Modify/Delete/Undelete with the changed
//!   rows; `Count` is always the number of rows in that piece's `Data`. Failures carry no
//!   `Count`/`Data`. User Delete answers 080 whatever it matched.
//! - Deposit (Object Account) needs Options `Id` and `Amount` (> 0); `StartTime` defaults to 0
//!   (-infinity), `EndTime` to 2147483647 (infinity), and StartTime must precede EndTime.
//!   Into an existing allocation (same account and window) it adds to `Amount` and `Deposited`;
//!   option `CreditLimit`, when given, replaces the allocation's; `Description` goes on the
//!   deposit's `Transaction` record, not on the allocation (as in Gold).
//! - A dropped reply ([`GoldServer::drop_next_reply`]) is consumed by the next request with that
//!   action that is signed and authorized, whatever its outcome.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use roster::gold::proto::sign;
use roster::gold::xml::{self, Element};

/// Rows per reply piece of a chunked query when not configured.
pub const DEFAULT_CHUNK_ROWS: usize = 100;
/// Largest request payload accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest HTTP request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 64;
/// The whole request must have arrived within this time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Writing the reply may take at most this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After replying, how long the client may take to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// Gold's "infinity" (and the largest time accepted); 0 is "-infinity".
pub const INFINITY: i64 = 2_147_483_647;

// ---------------------------------------------------------------------------------------------
// The handle

/// How the server is configured (the binary's flags map onto it).
#[derive(Clone, Debug)]
pub struct Options {
    /// The shared secret: the first line of Gold's `auth_key` file, without the newline.
    pub secret: String,
    /// Actors allowed to act (Gold's roles reduced to a set of names); others get 444.
    pub actors: Vec<String>,
    /// Rows per reply piece when a query asks for chunking (`chunking="True"`); 0 counts as 1.
    pub chunk_rows: usize,
    /// Actors whose roles allow queries only: their signed queries succeed, anything else gets
    /// 444 (as real Gold answers an actor without write rights).
    pub readers: Vec<String>,
}

impl Options {
    /// The secret, actor `root`, [`DEFAULT_CHUNK_ROWS`].
    pub fn new(secret: &str) -> Options {
        Options {
            secret: secret.into(),
            actors: vec!["root".into()],
            chunk_rows: DEFAULT_CHUNK_ROWS,
            readers: vec![],
        }
    }
}

/// What the binary adds to the in-process server: a JSON-lines request log and a control
/// directory. Both off by default.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Append one JSON object per request ([`LogEntry`]) to this file, flushed per request.
    pub log_file: Option<PathBuf>,
    /// A file `drop-next-ACTION` here arms [`GoldServer::drop_next_reply`] for `ACTION`; the
    /// server removes it when it uses it.
    pub control_dir: Option<PathBuf>,
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LogEntry {
    /// The Request's `action` (empty when it could not be read, e.g. HTTP-level refusals).
    pub action: String,
    /// The Request's `Object`s.
    pub objects: Vec<String>,
    pub actor: String,
    /// The Gold status code sent (three digits), or the HTTP status of an HTTP-level refusal.
    pub code: String,
    /// Whether the signature verified.
    pub signed: bool,
}

/// A running server; it stops when the handle is dropped.
pub struct GoldServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl GoldServer {
    /// Listens on `bind` (`"127.0.0.1:0"`: any free port) and serves on the caller's runtime.
    pub async fn start(bind: &str, opts: Options) -> std::io::Result<GoldServer> {
        GoldServer::start_with(bind, opts, Extras::default()).await
    }

    /// [`GoldServer::start`] with a request log file and/or a control directory.
    pub async fn start_with(
        bind: &str,
        opts: Options,
        extras: Extras,
    ) -> std::io::Result<GoldServer> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            extras,
            store: Mutex::new(Store::seeded()),
            log: Mutex::new(Vec::new()),
            drops: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(GoldServer { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request so far, oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        lock(&self.shared.log).clone()
    }

    /// The next signed and authorized request with this action is performed, but its
    /// connection is closed without a reply (arming twice drops two).
    pub fn drop_next_reply(&self, action: &str) {
        lock(&self.shared.drops).push(action.to_string());
    }

    /// The current non-deleted objects of a class with all their attributes, as a Query
    /// without `Get` returns them (empty for an unknown class).
    /// The live rows of an object class as a test inspects them (Gold's pseudo-users and
    /// pseudo-projects left out; the wire carries them).
    pub fn rows(&self, object: &str) -> Vec<BTreeMap<String, String>> {
        let Some(class) = class(object) else {
            return vec![];
        };
        let store = lock(&self.shared.store);
        let now = now();
        let pseudo = matches!(class.name, "User" | "Project");
        store
            .table(class)
            .iter()
            .filter(|r| !r.deleted)
            .filter(|r| !(pseudo && PSEUDO_NAMES.contains(&r.values[0].as_str())))
            .map(|r| {
                class
                    .attrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a.name.to_string(), r.value(class, i, now)))
                    .collect()
            })
            .collect()
    }

    /// Stops serving (the same as dropping the handle).
    pub fn shutdown(self) {}
}

impl Drop for GoldServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// State shared by the connections.
struct Shared {
    opts: Options,
    extras: Extras,
    store: Mutex<Store>,
    log: Mutex<Vec<LogEntry>>,
    /// Actions whose next reply is dropped.
    drops: Mutex<Vec<String>>,
}

/// Locks, also after a panic elsewhere (the data stays consistent: each change is one step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Seconds since the epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Shared {
    fn record(&self, entry: LogEntry) {
        tracing::info!(
            action = %entry.action,
            objects = %entry.objects.join(","),
            actor = %entry.actor,
            code = %entry.code,
            signed = entry.signed,
            "gold request"
        );
        if let Some(path) = &self.extras.log_file {
            let line = serde_json::to_string(&entry).unwrap_or_default() + "\n";
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
            if let Err(e) = written {
                tracing::warn!("cannot append to {}: {e}", path.display());
            }
        }
        lock(&self.log).push(entry);
    }

    /// Whether the reply to this action is to be dropped (and disarms it).
    fn take_drop(&self, action: &str) -> bool {
        {
            let mut drops = lock(&self.drops);
            if let Some(i) = drops.iter().position(|a| a == action) {
                drops.remove(i);
                return true;
            }
        }
        match &self.extras.control_dir {
            // Only plain names become file names.
            Some(dir)
                if !action.is_empty() && action.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                std::fs::remove_file(dir.join(format!("drop-next-{action}"))).is_ok()
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Transport

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here so that aborting this task also aborts the connections.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                connections.spawn(connection(stream, shared.clone()));
            }
            Err(e) => {
                // E.g. out of descriptors: wait a little instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One request, one reply (or none), then close.
async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let request = {
        let mut reader = Reader::new(&mut stream);
        read_request(&mut reader).await
    };
    let reply = match request {
        Err(Refusal::Silent) => None,
        Err(Refusal::Http(status, why)) => {
            shared.record(LogEntry {
                action: String::new(),
                objects: vec![],
                actor: String::new(),
                code: status.to_string(),
                signed: false,
            });
            Some(Reply::Http(http_error(status, &why)))
        }
        Ok(body) => shared.handle(&body),
    };
    match reply {
        Some(Reply::Once(bytes)) => {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
        }
        Some(Reply::Forever(piece)) => {
            // Piece 1 over and over, as goldd does, until the client gives up (bounded here
            // by FOREVER so that a client that never hangs up cannot keep a task alive).
            let head = frame_head();
            let framed = format!("{:x}\r\n{piece}", piece.len());
            let _ = tokio::time::timeout(FOREVER, async {
                if stream.write_all(head.as_bytes()).await.is_ok() {
                    while stream.write_all(framed.as_bytes()).await.is_ok() {}
                }
            })
            .await;
            return;
        }
        Some(Reply::Http(bytes)) => {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
        }
        None => {}
    }
    close(stream).await;
}

/// A reply as it goes on the wire.
enum Reply {
    Once(Vec<u8>),
    /// Gold's endless chunking: this piece again and again.
    Forever(String),
    Http(Vec<u8>),
}

/// How long an endless reply goes on at most (real Gold: until the client closes).
const FOREVER: Duration = Duration::from_secs(120);

/// Closes without resetting: FIN first, then read what the client still sends (e.g. the CRLF
/// after an RFC-style last chunk) until it closes too, briefly. Unread data at close would make
/// the kernel send RST, which can destroy the reply before the client reads it.
async fn close(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while let Ok(n) = stream.read(&mut buf).await {
            total += n;
            if n == 0 || total > 64 * 1024 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Why a request gets no Gold-level answer.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Nothing arrived at all (a port probe): no reply, no log entry.
    Silent,
    /// An HTTP-level refusal with this status.
    Http(u16, String),
}

fn bad_request(why: &str) -> Refusal {
    Refusal::Http(400, why.to_string())
}

/// A buffered reader with one deadline for the whole request.
struct Reader<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    pos: usize,
    deadline: tokio::time::Instant,
}

impl<'a> Reader<'a> {
    fn new(stream: &'a mut TcpStream) -> Reader<'a> {
        Reader {
            stream,
            buf: Vec::new(),
            pos: 0,
            deadline: tokio::time::Instant::now() + READ_TIMEOUT,
        }
    }

    /// Reads more bytes into the buffer.
    async fn fill(&mut self) -> Result<(), Refusal> {
        if self.buf.len() > MAX_HEAD + MAX_BODY + 4096 {
            return Err(bad_request("the request is too large"));
        }
        let mut chunk = [0u8; 8192];
        let read = tokio::time::timeout_at(self.deadline, self.stream.read(&mut chunk)).await;
        let problem = match read {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Ok(Ok(_)) => "the request ended early",
            Ok(Err(_)) => "the connection failed while reading",
            Err(_) => "the request did not arrive in time",
        };
        if self.buf.is_empty() {
            Err(Refusal::Silent)
        } else {
            Err(bad_request(problem))
        }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Everything up to `delim` (consumed, not returned), at most `max` bytes before it.
    async fn until(&mut self, delim: &[u8], max: usize, what: &str) -> Result<Vec<u8>, Refusal> {
        loop {
            if let Some(i) = find(self.available(), delim) {
                let out = self.available()[..i].to_vec();
                self.pos += i + delim.len();
                return Ok(out);
            }
            if self.available().len() > max {
                return Err(bad_request(&format!("{what} is too long")));
            }
            self.fill().await?;
        }
    }

    /// Exactly `n` bytes.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, Refusal> {
        while self.available().len() < n {
            self.fill().await?;
        }
        let out = self.available()[..n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// The next byte, not consumed.
    async fn peek(&mut self) -> Result<u8, Refusal> {
        while self.available().is_empty() {
            self.fill().await?;
        }
        Ok(self.available()[0])
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads and checks the head, then the chunked body.
async fn read_request(r: &mut Reader<'_>) -> Result<Vec<u8>, Refusal> {
    let head = r.until(b"\r\n\r\n", MAX_HEAD, "the request head").await?;
    check_head(&head)?;
    read_chunked(r).await
}

/// The request line and headers, checked in the order method, URI, content type, encoding.
fn check_head(head: &[u8]) -> Result<(), Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| bad_request("the head is not text"))?;
    let mut lines = text.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let [method, uri, version] = request_line[..] else {
        return Err(bad_request("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad_request("not HTTP/1.x"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad_request("malformed header line"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    if method != "POST" {
        return Err(Refusal::Http(
            405,
            format!("method {method} is not allowed"),
        ));
    }
    if !(uri.starts_with("/SSSRMAP") || uri.starts_with("/gold")) {
        return Err(Refusal::Http(404, format!("no service at {uri}")));
    }
    let media_type = header("content-type").map(|v| v.split(';').next().unwrap_or("").trim());
    if !media_type.is_some_and(|m| m.eq_ignore_ascii_case("text/xml")) {
        return Err(Refusal::Http(412, "Content-Type must be text/xml".into()));
    }
    let chunked = header("transfer-encoding")
        .and_then(|v| v.split(',').next_back())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if !chunked {
        return Err(bad_request(
            "Transfer-Encoding: chunked is required (Content-Length alone is refused)",
        ));
    }
    Ok(())
}

/// Chunks up to the zero-size one. The CRLF after a chunk's data is optional (Gold's clients
/// leave it out); nothing after the final `0\r\n` is waited for.
async fn read_chunked(r: &mut Reader<'_>) -> Result<Vec<u8>, Refusal> {
    let mut body = Vec::new();
    loop {
        let line = r
            .until(b"\r\n", MAX_CHUNK_LINE, "a chunk size line")
            .await?;
        let line = String::from_utf8_lossy(&line);
        let size = line.split(';').next().unwrap_or("").trim();
        if size.is_empty() || size.len() > 8 || !size.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad_request(&format!("bad chunk size {line:?}")));
        }
        let size = usize::from_str_radix(size, 16).map_err(|_| bad_request("bad chunk size"))?;
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad_request("the payload is larger than 4 MiB"));
        }
        body.extend(r.take(size).await?);
        if r.peek().await? == b'\r' && r.take(2).await? != b"\r\n" {
            return Err(bad_request("a stray CR after chunk data"));
        }
    }
}

/// An HTTP-level refusal: status line, a short text body, close.
fn http_error(status: u16, why: &str) -> Vec<u8> {
    let reason = match status {
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        _ => "Bad Request",
    };
    let allow = if status == 405 { "Allow: POST\r\n" } else { "" };
    let body = format!("{status} {reason}: {why}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\n{allow}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Gold's reply framing: the head, `<hex>\r\n<payload>` per piece (no CRLF after the data), a
/// bare `0\r\n`.
fn frame_reply(pieces: &[String]) -> Vec<u8> {
    let mut out = frame_head().to_string();
    for p in pieces {
        out.push_str(&format!("{:x}\r\n{p}", p.len()));
    }
    out.push_str("0\r\n");
    out.into_bytes()
}

fn frame_head() -> &'static str {
    "HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nTransfer-Encoding: chunked\r\n\r\n"
}

// ---------------------------------------------------------------------------------------------
// Messages: envelope, signature, request

/// A Gold-level failure: status code and message.
#[derive(Debug, PartialEq, Eq)]
struct Fail {
    code: &'static str,
    message: String,
}

fn fail<T>(code: &'static str, message: impl Into<String>) -> Result<T, Fail> {
    Err(Fail {
        code,
        message: message.into(),
    })
}

/// What a successful action answers: status, and rows of one object class.
struct Outcome {
    code: &'static str,
    message: String,
    object: &'static str,
    rows: Vec<Vec<(&'static str, String)>>,
}

impl Shared {
    /// A payload in, the framed reply out (`None`: the reply is dropped on purpose).
    fn handle(&self, payload: &[u8]) -> Option<Reply> {
        let mut entry = LogEntry {
            action: String::new(),
            objects: vec![],
            actor: String::new(),
            code: String::new(),
            signed: false,
        };
        let mut chunking = false;
        let mut dropped = false;
        let result = self.process(payload, &mut entry, &mut chunking, &mut dropped);
        let reply = match &result {
            Ok(outcome) => {
                entry.code = outcome.code.into();
                let per_piece = if chunking {
                    self.opts.chunk_rows.max(1)
                } else {
                    usize::MAX
                };
                let pieces = success_pieces(&entry.actor, outcome, per_piece, chunking);
                // Gold 2.2's Bank module answers Account and Allocation queries without the
                // next chunk number: once a piece is full, goldd sends piece 1 again, forever.
                if pieces.len() > 1 && matches!(outcome.object, "Account" | "Allocation") {
                    Reply::Forever(pieces[0].clone())
                } else {
                    Reply::Once(frame_reply(&pieces))
                }
            }
            Err(f) => {
                entry.code = f.code.into();
                Reply::Once(frame_reply(&[failure_piece(&entry.actor, f)]))
            }
        };
        self.record(entry);
        (!dropped).then_some(reply)
    }

    /// Parses, verifies, authorizes and performs one request, filling in the log entry.
    fn process(
        &self,
        payload: &[u8],
        entry: &mut LogEntry,
        chunking: &mut bool,
        dropped: &mut bool,
    ) -> Result<Outcome, Fail> {
        let Ok(text) = std::str::from_utf8(payload) else {
            return fail("242", "Malformed message: the payload is not UTF-8");
        };
        let env = match xml::parse(text) {
            Ok(e) => e,
            Err(e) => return fail("242", format!("Malformed message: {e}")),
        };
        if env.name != "Envelope" {
            return fail("242", "Malformed message: the root element is not Envelope");
        }
        let Some(body) = env.find("Body") else {
            return fail("242", "Malformed message: no Body in the Envelope");
        };
        let Some(request) = body.find("Request") else {
            return fail("242", "Malformed message: no Request in the Body");
        };
        entry.action = request.get_attr("action").unwrap_or("").into();
        entry.actor = request.get_attr("actor").unwrap_or("").into();
        entry.objects = request
            .elements()
            .filter(|e| e.name == "Object")
            .map(|e| e.text_content().trim().to_string())
            .collect();
        verify(&env, body, &self.opts.secret)?;
        entry.signed = true;
        let req = parse_request(request)?;
        *chunking = req.chunking;
        let reads_only = req.action == "Query" && self.opts.readers.contains(&req.actor);
        if !self.opts.actors.contains(&req.actor) && !reads_only {
            return fail(
                "444",
                format!(
                    "Failed authorization: {} is not authorized to perform {} on {}",
                    req.actor,
                    req.action,
                    req.objects.join(",")
                ),
            );
        }
        let result = lock(&self.store).execute(&req, now());
        *dropped = self.take_drop(&req.action);
        result
    }
}

/// Checks the Signature against the Body as libxml2 re-serializes it (hashed as Latin-1).
fn verify(env: &Element, body: &Element, secret: &str) -> Result<(), Fail> {
    let Some(sig) = env.find("Signature") else {
        return fail("424", "Message not signed");
    };
    if let Some(kind) = sig.find("SecurityToken").and_then(|t| t.get_attr("type"))
        && kind != "Symmetric"
    {
        return fail("424", format!("Unsupported security token type {kind}"));
    }
    let Some(bytes) = latin1(&body.to_xml()) else {
        return fail(
            "720",
            "Failed to compute the digest: the Body has characters above U+00FF",
        );
    };
    let (digest, mac) = sign(&bytes, secret);
    let field = |n: &str| sig.find(n).map(|e| e.text_content()).unwrap_or_default();
    if field("DigestValue").trim() != digest {
        return fail("424", "Incoming digest does not match calculated digest");
    }
    if field("SignatureValue").trim() != mac {
        return fail("424", "Incoming MAC does not match calculated MAC");
    }
    Ok(())
}

/// One byte per character, as Gold hashes the re-serialized Body; `None` above U+00FF.
fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// A request's parts, read from its XML.
#[derive(Debug, Default)]
struct Req {
    action: String,
    actor: String,
    objects: Vec<String>,
    gets: Vec<Get>,
    sets: Vec<Set>,
    wheres: Vec<Cond>,
    options: Vec<(String, String)>,
    chunking: bool,
}

#[derive(Debug)]
struct Get {
    name: String,
    op: Option<String>,
}

#[derive(Debug)]
struct Set {
    name: String,
    value: String,
    op: Option<String>,
}

#[derive(Clone, Debug)]
struct Cond {
    name: String,
    value: String,
    op: Option<String>,
    conj: Option<String>,
    group: i32,
}

impl Req {
    /// The last value given for an option.
    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_request(el: &Element) -> Result<Req, Fail> {
    let attr = |n: &str| el.get_attr(n).filter(|v| !v.is_empty()).map(String::from);
    let Some(action) = attr("action") else {
        return fail("312", "No action specified");
    };
    let Some(actor) = attr("actor") else {
        return fail("312", "No actor specified");
    };
    let mut req = Req {
        action,
        actor,
        chunking: el.get_attr("chunking") == Some("True"),
        ..Req::default()
    };
    for child in el.elements() {
        let name = || match child.get_attr("name") {
            Some(n) if !n.is_empty() => Ok(n.to_string()),
            _ => fail("318", format!("{} without a name", child.name)),
        };
        let op = child.get_attr("op").map(String::from);
        match child.name.as_str() {
            "Object" => req.objects.push(child.text_content().trim().to_string()),
            "Get" => req.gets.push(Get { name: name()?, op }),
            "Set" => req.sets.push(Set {
                name: name()?,
                value: child.text_content(),
                op,
            }),
            "Where" => {
                let group = match child.get_attr("group") {
                    None => 0,
                    Some(g) => match g.parse::<i32>() {
                        Ok(n) => n,
                        Err(_) => return fail("317", format!("Invalid group {g:?}")),
                    },
                };
                req.wheres.push(Cond {
                    name: name()?,
                    value: child.text_content(),
                    op,
                    conj: child.get_attr("conj").map(String::from),
                    group,
                });
            }
            "Option" => req.options.push((name()?, child.text_content())),
            other => {
                return fail(
                    "242",
                    format!("Malformed message: unexpected element {other} in Request"),
                );
            }
        }
    }
    if req.objects.iter().all(|o| o.is_empty()) {
        return fail("311", "No object specified");
    }
    Ok(req)
}

/// The reply pieces of a success: `per_piece` rows each (at least one piece).
fn success_pieces(actor: &str, outcome: &Outcome, per_piece: usize, chunking: bool) -> Vec<String> {
    let chunks: Vec<&[Vec<(&str, String)>]> = if outcome.rows.is_empty() {
        vec![&[]]
    } else {
        outcome.rows.chunks(per_piece).collect()
    };
    let last = chunks.len();
    chunks
        .iter()
        .enumerate()
        .map(|(i, rows)| {
            let mut response = Element::new("Response").attr("actor", actor);
            if chunking {
                response = response.attr("chunkNum", &(i + 1).to_string());
                if i + 1 < last {
                    response = response.attr("chunkMax", "-1");
                }
            }
            let mut data = Element::new("Data");
            for row in rows.iter() {
                let mut r = Element::new(outcome.object);
                for (name, value) in row {
                    r = r.child(Element::new(name).text(value));
                }
                data = data.child(r);
            }
            envelope(
                response
                    .child(status("Success", outcome.code, &outcome.message))
                    .child(Element::new("Count").text(&rows.len().to_string()))
                    .child(data),
            )
        })
        .collect()
}

fn failure_piece(actor: &str, f: &Fail) -> String {
    envelope(
        Element::new("Response")
            .attr("actor", actor)
            .child(status("Failure", f.code, &f.message)),
    )
}

fn status(value: &str, code: &str, message: &str) -> Element {
    Element::new("Status")
        .child(Element::new("Value").text(value))
        .child(Element::new("Code").text(code))
        .child(Element::new("Message").text(message))
}

fn envelope(response: Element) -> String {
    let env = Element::new("Envelope").child(Element::new("Body").child(response));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        env.to_xml()
    )
}

// ---------------------------------------------------------------------------------------------
// Object model

/// Value types: booleans are `True`/`False`, times epoch seconds in 0..=[`INFINITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Int,
    Time,
}

/// What an attribute is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Plain,
    /// Part of the key: required on Create, never modified.
    Key,
    /// A numeric key the server assigns.
    AutoId,
    /// Required on Create, may be modified.
    Required,
    /// Computed when read (Allocation `Active`).
    Computed,
    /// The hidden `Deleted` column.
    Hidden,
}

#[derive(Debug)]
struct Attr {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    role: Role,
}

const fn attr(name: &'static str, kind: Kind, default: &'static str, role: Role) -> Attr {
    Attr {
        name,
        kind,
        default,
        role,
    }
}

const fn text(name: &'static str) -> Attr {
    attr(name, Kind::Text, "", Role::Plain)
}

const fn flag(name: &'static str, default: &'static str) -> Attr {
    attr(name, Kind::Bool, default, Role::Plain)
}

const fn number(name: &'static str) -> Attr {
    attr(name, Kind::Int, "0", Role::Plain)
}

/// Every object has it; shown with `ShowHidden=True`.
const DELETED: Attr = attr("Deleted", Kind::Bool, "False", Role::Hidden);

/// An object class: its attributes in reply order.
#[derive(Debug)]
struct Class {
    name: &'static str,
    attrs: &'static [Attr],
}

static USER: Class = Class {
    name: "User",
    attrs: &[
        attr("Name", Kind::Text, "", Role::Key),
        flag("Active", "True"),
        text("CommonName"),
        text("PhoneNumber"),
        text("EmailAddress"),
        text("DefaultProject"),
        text("Organization"),
        text("Description"),
    ],
};

static PROJECT: Class = Class {
    name: "Project",
    attrs: &[
        attr("Name", Kind::Text, "", Role::Key),
        flag("Active", "True"),
        text("Organization"),
        text("Description"),
    ],
};

static PROJECT_USER: Class = Class {
    name: "ProjectUser",
    attrs: &[
        attr("Project", Kind::Text, "", Role::Key),
        attr("Name", Kind::Text, "", Role::Key),
        flag("Active", "True"),
        flag("Admin", "False"),
    ],
};

static ORGANIZATION: Class = Class {
    name: "Organization",
    attrs: &[attr("Name", Kind::Text, "", Role::Key), text("Description")],
};

static ACCOUNT: Class = Class {
    name: "Account",
    attrs: &[
        attr("Id", Kind::Int, "", Role::AutoId),
        text("Name"),
        flag("Active", "True"),
        text("Description"),
    ],
};

static ALLOCATION: Class = Class {
    name: "Allocation",
    attrs: &[
        attr("Id", Kind::Int, "", Role::AutoId),
        attr("Account", Kind::Int, "", Role::Required),
        attr("StartTime", Kind::Time, "0", Role::Plain),
        attr("EndTime", Kind::Time, "2147483647", Role::Plain),
        number("Amount"),
        number("CreditLimit"),
        number("Deposited"),
        attr("Active", Kind::Bool, "", Role::Computed),
        text("Description"),
    ],
};

/// How Gold links accounts to projects (an account is not its project's name: `Project
/// Create` makes a new account named after the project and links it; a purge unlinks it).
static ACCOUNT_PROJECT: Class = Class {
    name: "AccountProject",
    attrs: &[
        attr("Account", Kind::Int, "", Role::Key),
        attr("Name", Kind::Text, "", Role::Key),
        flag("Active", "True"),
    ],
};

/// The record of a deposit (its `Description` lands here, not on the allocation).
static TRANSACTION: Class = Class {
    name: "Transaction",
    attrs: &[
        attr("Id", Kind::Int, "", Role::AutoId),
        text("Object"),
        text("Action"),
        attr("Account", Kind::Int, "", Role::Plain),
        number("Amount"),
        text("Description"),
    ],
};

/// Every class the server knows.
static CLASSES: [&Class; 8] = [
    &USER,
    &PROJECT,
    &PROJECT_USER,
    &ORGANIZATION,
    &ACCOUNT,
    &ALLOCATION,
    &ACCOUNT_PROJECT,
    &TRANSACTION,
];

fn class(name: &str) -> Option<&'static Class> {
    CLASSES.iter().copied().find(|c| c.name == name)
}

impl Class {
    fn index(&self, name: &str) -> Option<usize> {
        self.attrs.iter().position(|a| a.name == name)
    }

    /// An attribute by its (case-sensitive) name, `Deleted` included; 318 if unknown.
    fn lookup(&self, name: &str) -> Result<Column, Fail> {
        match self.index(name) {
            Some(i) => Ok(Column::Attr(i)),
            None if name == DELETED.name => Ok(Column::Deleted),
            None => fail(
                "318",
                format!("Invalid attribute {name} for object {}", self.name),
            ),
        }
    }

    fn attr_of(&self, c: Column) -> &'static Attr {
        match c {
            Column::Attr(i) => &self.attrs[i],
            Column::Deleted => &DELETED,
        }
    }

    fn key(&self) -> impl Iterator<Item = usize> + '_ {
        self.attrs
            .iter()
            .enumerate()
            .filter(|(_, a)| matches!(a.role, Role::Key | Role::AutoId))
            .map(|(i, _)| i)
    }

    /// "1 User", "2 Users".
    fn count(&self, n: usize) -> String {
        format!("{n} {}{}", self.name, if n == 1 { "" } else { "s" })
    }
}

/// A readable column: one of the class's attributes or the hidden `Deleted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Attr(usize),
    Deleted,
}

/// Checks a value against an attribute's type (317).
fn check_value(a: &Attr, v: &str) -> Result<(), Fail> {
    let (ok, what) = match a.kind {
        Kind::Text => (true, ""),
        Kind::Bool => (v == "True" || v == "False", "a boolean (True or False)"),
        Kind::Int => (v.parse::<i64>().is_ok(), "an integer"),
        Kind::Time => (
            v.parse::<i64>().is_ok_and(|t| (0..=INFINITY).contains(&t)),
            "a time in epoch seconds (0 to 2147483647)",
        ),
    };
    if ok {
        Ok(())
    } else {
        fail(
            "317",
            format!("Invalid value {v:?} for {}: not {what}", a.name),
        )
    }
}

/// One stored object: values aligned with its class's attributes.
#[derive(Clone, Debug)]
struct Row {
    values: Vec<String>,
    deleted: bool,
}

impl Row {
    /// The value of attribute `i`, computed ones worked out for `now`.
    fn value(&self, class: &Class, i: usize, now: i64) -> String {
        let a = &class.attrs[i];
        if a.role == Role::Computed {
            let time = |n: &str| {
                class
                    .index(n)
                    .and_then(|j| self.values[j].parse::<i64>().ok())
                    .unwrap_or(0)
            };
            return bool_text(time("StartTime") <= now && now < time("EndTime")).into();
        }
        self.values[i].clone()
    }

    fn column(&self, class: &Class, c: Column, now: i64) -> String {
        match c {
            Column::Attr(i) => self.value(class, i, now),
            Column::Deleted => bool_text(self.deleted).into(),
        }
    }

    fn get(&self, class: &Class, name: &str) -> &str {
        class.index(name).map_or("", |i| self.values[i].as_str())
    }
}

fn bool_text(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Sort order of rows: by key, numeric keys numerically.
fn key_order(class: &Class, a: &Row, b: &Row) -> std::cmp::Ordering {
    class
        .key()
        .map(|i| compare_values(class.attrs[i].kind, &a.values[i], &b.values[i]))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// Numbers and times numerically, anything else byte-wise.
fn compare_values(kind: Kind, a: &str, b: &str) -> std::cmp::Ordering {
    if matches!(kind, Kind::Int | Kind::Time)
        && let (Ok(x), Ok(y)) = (a.parse::<i64>(), b.parse::<i64>())
    {
        return x.cmp(&y);
    }
    a.cmp(b)
}

// ---------------------------------------------------------------------------------------------
// Conditions

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Match,
}

/// A compiled `Where`.
#[derive(Debug)]
struct Test {
    column: Column,
    kind: Kind,
    op: Op,
    value: String,
}

/// A condition tree; `And`/`Or` are n-ary so that long chains stay flat.
#[derive(Debug)]
enum Expr {
    True,
    Test(usize),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// Deepest nesting of `group`s accepted.
const MAX_GROUP_DEPTH: i32 = 32;

/// The conditions of a request, ready to test rows.
#[derive(Debug)]
struct Filter {
    tests: Vec<Test>,
    expr: Expr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Not,
    And,
    Or,
    Test(usize),
}

impl Filter {
    /// Checks names (318), operators, values and groups (317), and builds the expression.
    fn compile(class: &Class, conds: &[Cond]) -> Result<Filter, Fail> {
        let mut tests = Vec::new();
        let mut tokens = Vec::new();
        let mut depth = 0i32;
        for (i, c) in conds.iter().enumerate() {
            depth = depth.saturating_add(c.group);
            if depth > MAX_GROUP_DEPTH || c.group.abs() > MAX_GROUP_DEPTH {
                return fail("317", "Where groups are nested too deep");
            }
            let column = class.lookup(&c.name)?;
            let op = match c.op.as_deref() {
                None | Some("EQ") => Op::Eq,
                Some("NE") => Op::Ne,
                Some("GT") => Op::Gt,
                Some("LT") => Op::Lt,
                Some("GE") => Op::Ge,
                Some("LE") => Op::Le,
                Some("Match") => Op::Match,
                Some(other) => return fail("317", format!("Invalid operator {other:?}")),
            };
            let kind = class.attr_of(column).kind;
            if op != Op::Match {
                check_value(class.attr_of(column), &c.value)?;
            }
            let (join, negate) = match c.conj.as_deref() {
                None | Some("And") => (Token::And, false),
                Some("Or") => (Token::Or, false),
                Some("AndNot") => (Token::And, true),
                Some("OrNot") => (Token::Or, true),
                Some(other) => return fail("317", format!("Invalid conjunction {other:?}")),
            };
            if i > 0 {
                tokens.push(join);
            }
            if negate {
                tokens.push(Token::Not);
            }
            for _ in 0..c.group.max(0) {
                tokens.push(Token::Open);
            }
            tokens.push(Token::Test(i));
            for _ in 0..(-c.group).max(0) {
                tokens.push(Token::Close);
            }
            tests.push(Test {
                column,
                kind,
                op,
                value: c.value.clone(),
            });
        }
        let expr = if tokens.is_empty() {
            Expr::True
        } else {
            let mut p = ExprParser {
                tokens: &tokens,
                pos: 0,
            };
            match p.or() {
                Some(e) if p.pos == tokens.len() => e,
                _ => return fail("317", "Unbalanced Where groups"),
            }
        };
        Ok(Filter { tests, expr })
    }

    fn matches(&self, class: &Class, row: &Row, now: i64) -> bool {
        self.eval(&self.expr, class, row, now)
    }

    fn eval(&self, e: &Expr, class: &Class, row: &Row, now: i64) -> bool {
        match e {
            Expr::True => true,
            Expr::Test(i) => {
                let t = &self.tests[*i];
                test(t.kind, t.op, &row.column(class, t.column, now), &t.value)
            }
            Expr::Not(e) => !self.eval(e, class, row, now),
            Expr::And(es) => es.iter().all(|e| self.eval(e, class, row, now)),
            Expr::Or(es) => es.iter().any(|e| self.eval(e, class, row, now)),
        }
    }
}

/// Recursive descent over the tokens with SQL's precedence: NOT, then AND, then OR.
struct ExprParser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl ExprParser<'_> {
    fn eat(&mut self, t: Token) -> bool {
        let hit = self.tokens.get(self.pos) == Some(&t);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn or(&mut self) -> Option<Expr> {
        self.level(Token::Or, Self::and, Expr::Or)
    }

    fn and(&mut self) -> Option<Expr> {
        self.level(Token::And, Self::unary, Expr::And)
    }

    /// `operand (sep operand)*`, one operand as itself.
    fn level(
        &mut self,
        sep: Token,
        operand: fn(&mut Self) -> Option<Expr>,
        join: fn(Vec<Expr>) -> Expr,
    ) -> Option<Expr> {
        let mut terms = vec![operand(self)?];
        while self.eat(sep) {
            terms.push(operand(self)?);
        }
        Some(if terms.len() == 1 {
            terms.remove(0)
        } else {
            join(terms)
        })
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.eat(Token::Not) {
            return Some(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat(Token::Open) {
            let e = self.or()?;
            return self.eat(Token::Close).then_some(e);
        }
        match self.tokens.get(self.pos) {
            Some(Token::Test(i)) => {
                self.pos += 1;
                Some(Expr::Test(*i))
            }
            _ => None,
        }
    }
}

/// One comparison of a row's value with a condition's.
fn test(kind: Kind, op: Op, actual: &str, expected: &str) -> bool {
    let order = compare_values(kind, actual, expected);
    match op {
        Op::Eq => order.is_eq(),
        Op::Ne => order.is_ne(),
        Op::Gt => order.is_gt(),
        Op::Lt => order.is_lt(),
        Op::Ge => order.is_ge(),
        Op::Le => order.is_le(),
        Op::Match => like(expected, actual),
    }
}

/// SQL `LIKE` as Gold generates it from a glob: anchored; `*` or `%` match any run of
/// characters, `?` or `_` exactly one.
fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let is_star = |c: char| c == '*' || c == '%';
    let (mut pi, mut ti) = (0, 0);
    // Where the last star was, and how much of the text it has taken.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && is_star(p[pi]) {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == '_' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| is_star(c))
}

// ---------------------------------------------------------------------------------------------
// The store and the actions

/// `(class, attribute)` must name a live `(class, attribute)` when not empty (740).
const REFERENCES: &[(&str, &str, &str, &str)] = &[
    ("User", "DefaultProject", "Project", "Name"),
    ("User", "Organization", "Organization", "Name"),
    ("Project", "Organization", "Organization", "Name"),
    ("ProjectUser", "Project", "Project", "Name"),
    ("ProjectUser", "Name", "User", "Name"),
    ("Allocation", "Account", "Account", "Id"),
];

/// What Gold 2.2's `Database` module does with a value: it pastes it into the SQL statement as
/// `'value'`, unescaped. A value without `'` is itself. One that closes the string and compares
/// (`x' < 'y`, `a' = 'a`) is evaluated by PostgreSQL, and the boolean is stored (`true`/`false`);
/// anything else with a `'` is a syntax error, which Gold answers with 720 and the driver's
/// message (`O'Brien`: `syntax error at or near "Brien"`).
fn sql_literal(v: &str) -> Result<String, Fail> {
    let Some((left, rest)) = v.split_once('\'') else {
        return Ok(v.to_string());
    };
    let syntax = |near: &str| -> Result<String, Fail> {
        let token: String = near
            .trim_start()
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '\'')
            .collect();
        fail(
            "720",
            format!(
                "DBD::Pg::db do failed: ERROR:  syntax error at or near \"{}\"",
                if token.is_empty() { "'" } else { &token }
            ),
        )
    };
    let Some((op, right)) = rest.split_once('\'') else {
        return syntax(rest);
    };
    if right.contains('\'') {
        return syntax(right);
    }
    let ordering = left.as_bytes().cmp(right.as_bytes());
    let result = match op.trim() {
        "=" => ordering.is_eq(),
        "<>" | "!=" => ordering.is_ne(),
        "<" => ordering.is_lt(),
        ">" => ordering.is_gt(),
        "<=" => ordering.is_le(),
        ">=" => ordering.is_ge(),
        _ => return syntax(rest),
    };
    Ok(if result { "true" } else { "false" }.to_string())
}

/// `Where` values go into the SQL the same way as `Set` values.
fn sql_conditions(wheres: &[Cond]) -> Result<Vec<Cond>, Fail> {
    wheres
        .iter()
        .map(|c| {
            Ok(Cond {
                value: sql_literal(&c.value)?,
                ..c.clone()
            })
        })
        .collect()
}

/// How a `Set` changes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetOp {
    Assign,
    Inc,
    Dec,
}

/// A checked `Set`.
#[derive(Debug)]
struct Assignment {
    index: usize,
    value: String,
    op: SetOp,
}

/// All objects, soft-deleted ones included, each table in key order.
#[derive(Debug, Default)]
struct Store {
    tables: BTreeMap<&'static str, Vec<Row>>,
    /// The last id handed out per auto-id class.
    last_id: BTreeMap<&'static str, u64>,
}

/// Gold's pseudo-users and pseudo-projects (`Special` in Gold): they exist in every Gold and
/// come back from queries.
pub const PSEUDO_NAMES: [&str; 5] = ["ANY", "MEMBERS", "NONE", "SELF", "ADMIN"];

impl Store {
    /// A fresh Gold: its pseudo-users and pseudo-projects, and nothing else.
    fn seeded() -> Store {
        let mut s = Store::default();
        for class in [&USER, &PROJECT] {
            for name in PSEUDO_NAMES {
                let mut values: Vec<String> =
                    class.attrs.iter().map(|a| a.default.into()).collect();
                values[0] = name.into();
                if let Some(d) = class.index("Description") {
                    values[d] = "Pseudo-object".into();
                }
                s.table_mut(class).push(Row {
                    values,
                    deleted: false,
                });
            }
            s.table_mut(class).sort_by(|a, b| key_order(class, a, b));
        }
        s
    }

    fn table(&self, class: &Class) -> &[Row] {
        self.tables.get(class.name).map_or(&[], |t| t.as_slice())
    }

    fn table_mut(&mut self, class: &'static Class) -> &mut Vec<Row> {
        self.tables.entry(class.name).or_default()
    }

    fn next_id(&mut self, class: &'static Class) -> u64 {
        let n = self.last_id.entry(class.name).or_insert(0);
        *n += 1;
        *n
    }

    /// Whether a live object of `object` has `attr` = `value`.
    fn exists(&self, object: &str, attr: &str, value: &str) -> bool {
        class(object).is_some_and(|c| {
            self.table(c)
                .iter()
                .any(|r| !r.deleted && r.get(c, attr) == value)
        })
    }

    /// Indexes of the rows that pass `keep` and the filter.
    fn select(
        &self,
        class: &Class,
        filter: &Filter,
        now: i64,
        keep: impl Fn(&Row) -> bool,
    ) -> Vec<usize> {
        self.table(class)
            .iter()
            .enumerate()
            .filter(|(_, r)| keep(r) && filter.matches(class, r, now))
            .map(|(i, _)| i)
            .collect()
    }

    /// Performs a verified, authorized request.
    fn execute(&mut self, req: &Req, now: i64) -> Result<Outcome, Fail> {
        if req.objects.len() > 1 {
            return fail(
                "720",
                "Joins (several Objects) are not implemented by this test server",
            );
        }
        let name = &req.objects[0];
        let Some(class) = class(name) else {
            return fail("311", format!("Object {name} does not exist"));
        };
        match (req.action.as_str(), class.name) {
            ("Query", _) => self.query(class, req, now),
            ("Create", _) => self.create(class, req, now),
            ("Modify", _) => self.modify(class, req, now),
            ("Delete", _) => self.set_deleted(class, req, now, true),
            ("Undelete", _) => self.set_deleted(class, req, now, false),
            ("Deposit", "Account") => self.deposit(req, now),
            (action, object) => fail(
                "312",
                format!("Action {action} is not valid for object {object}"),
            ),
        }
    }

    fn query(&self, class: &'static Class, req: &Req, now: i64) -> Result<Outcome, Fail> {
        let show_hidden = option(req, "ShowHidden", Kind::Bool)?.is_some_and(|v| v == "True");
        let count = |name| -> Result<Option<usize>, Fail> {
            match option(req, name, Kind::Int)? {
                None => Ok(None),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) => Ok(Some(n)),
                    Err(_) => fail("317", format!("Invalid value {v:?} for option {name}")),
                },
            }
        };
        let limit = count("Limit")?.unwrap_or(usize::MAX);
        let offset = count("Offset")?.unwrap_or(0);
        let columns = if req.gets.is_empty() {
            all_columns(class, show_hidden)
        } else {
            let mut columns = Vec::new();
            for g in &req.gets {
                if let Some(op) = &g.op {
                    return fail(
                        "720",
                        format!("Get with op {op} is not implemented by this test server"),
                    );
                }
                columns.push(class.lookup(&g.name)?);
            }
            columns
        };
        let filter = Filter::compile(class, &sql_conditions(&req.wheres)?)?;
        let table = self.table(class);
        let rows = self
            .select(class, &filter, now, |r| show_hidden || !r.deleted)
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|i| view(class, &table[i], &columns, now))
            .collect();
        Ok(Outcome {
            code: "000",
            message: String::new(),
            object: class.name,
            rows,
        })
    }

    fn create(&mut self, class: &'static Class, req: &Req, now: i64) -> Result<Outcome, Fail> {
        let sets = assignments(class, &req.sets, true)?;
        for (i, a) in class.attrs.iter().enumerate() {
            let given = sets.iter().any(|s| s.index == i && !s.value.is_empty());
            if matches!(a.role, Role::Key | Role::Required) && !given {
                return fail("740", format!("A value for {} must be specified", a.name));
            }
        }
        self.check_references(class, &sets)?;
        let mut values: Vec<String> = class.attrs.iter().map(|a| a.default.into()).collect();
        for s in &sets {
            values[s.index] = s.value.clone();
        }
        if let (Some(amount), Some(deposited)) = (class.index("Amount"), class.index("Deposited"))
            && !sets.iter().any(|s| s.index == deposited)
        {
            values[deposited] = values[amount].clone();
        }
        let key: Vec<usize> = class.key().collect();
        let auto_id = key.iter().find(|&&i| class.attrs[i].role == Role::AutoId);
        let existing = match auto_id {
            Some(_) => None,
            None => self
                .table(class)
                .iter()
                .position(|r| key.iter().all(|&k| r.values[k] == values[k])),
        };
        let row = match existing {
            Some(p) if !self.table(class)[p].deleted => {
                return fail(
                    "740",
                    format!(
                        "{} {} already exists",
                        class.name,
                        describe_key(class, &values)
                    ),
                );
            }
            // Re-creating a soft-deleted object undeletes it.
            Some(p) => {
                let row = &mut self.table_mut(class)[p];
                row.deleted = false;
                for s in &sets {
                    row.values[s.index] = s.value.clone();
                }
                row.clone()
            }
            None => {
                if let Some(&id) = auto_id {
                    values[id] = self.next_id(class).to_string();
                }
                let row = Row {
                    values,
                    deleted: false,
                };
                let table = self.table_mut(class);
                table.push(row.clone());
                table.sort_by(|a, b| key_order(class, a, b));
                row
            }
        };
        if class.name == "Project" {
            self.autogen_account(&row.values[0]);
        }
        Ok(Outcome {
            code: "000",
            message: format!("Successfully created {}", class.count(1)),
            object: class.name,
            rows: vec![view(class, &row, &all_columns(class, false), now)],
        })
    }

    /// `account.autogen`: every `Project Create` makes a **new** account named after the project
    /// and links it through `AccountProject` (an account of that name that is already there —
    /// left by a purge, or made by a site — is not reused), and `allocation.autogen` gives the
    /// new account a 0-credit allocation.
    fn autogen_account(&mut self, project: &str) {
        let class = &ACCOUNT;
        let (Some(id), Some(name)) = (class.index("Id"), class.index("Name")) else {
            return;
        };
        let mut values: Vec<String> = class.attrs.iter().map(|a| a.default.into()).collect();
        let account = self.next_id(class).to_string();
        values[id] = account.clone();
        values[name] = project.into();
        // Ids only grow: pushing keeps the key order.
        self.table_mut(class).push(Row {
            values,
            deleted: false,
        });
        let link = &ACCOUNT_PROJECT;
        let mut values: Vec<String> = link.attrs.iter().map(|a| a.default.into()).collect();
        values[0] = account.clone();
        values[1] = project.into();
        let table = self.table_mut(link);
        table.push(Row {
            values,
            deleted: false,
        });
        table.sort_by(|a, b| key_order(link, a, b));
        let alloc = &ALLOCATION;
        let mut values: Vec<String> = alloc.attrs.iter().map(|a| a.default.into()).collect();
        values[0] = self.next_id(alloc).to_string();
        if let Some(a) = alloc.index("Account") {
            values[a] = account;
        }
        for n in ["Amount", "Deposited", "CreditLimit"] {
            if let Some(i) = alloc.index(n) {
                values[i] = "0".into();
            }
        }
        self.table_mut(alloc).push(Row {
            values,
            deleted: false,
        });
    }

    fn modify(&mut self, class: &'static Class, req: &Req, now: i64) -> Result<Outcome, Fail> {
        let sets = assignments(class, &req.sets, false)?;
        if sets.is_empty() {
            return fail("740", "No assignments (Set) specified");
        }
        self.check_references(class, &sets)?;
        let filter = Filter::compile(class, &sql_conditions(&req.wheres)?)?;
        let hits = self.select(class, &filter, now, |r| !r.deleted);
        // Work out every change first: an overflow must leave nothing half done.
        let mut changed = Vec::with_capacity(hits.len());
        for &i in &hits {
            let mut row = self.table(class)[i].clone();
            for s in &sets {
                row.values[s.index] = assign(&row.values[s.index], s)?;
            }
            changed.push(row);
        }
        let table = self.table_mut(class);
        for (&i, row) in hits.iter().zip(&changed) {
            table[i] = row.clone();
        }
        let columns = all_columns(class, false);
        Ok(Outcome {
            code: "000",
            message: format!("Successfully modified {}", class.count(changed.len())),
            object: class.name,
            rows: changed
                .iter()
                .map(|r| view(class, r, &columns, now))
                .collect(),
        })
    }

    /// Delete (soft) or Undelete the matching objects.
    fn set_deleted(
        &mut self,
        class: &'static Class,
        req: &Req,
        now: i64,
        delete: bool,
    ) -> Result<Outcome, Fail> {
        let filter = Filter::compile(class, &sql_conditions(&req.wheres)?)?;
        let hits = self.select(class, &filter, now, |r| r.deleted != delete);
        let columns = all_columns(class, false);
        let table = self.table_mut(class);
        let mut rows = Vec::with_capacity(hits.len());
        for &i in &hits {
            table[i].deleted = delete;
            rows.push(view(class, &table[i], &columns, now));
        }
        // Deleting a project removes its accounts' links and leaves the accounts (and their
        // allocations) behind.
        if delete && class.name == "Project" {
            let names: Vec<String> = rows
                .iter()
                .filter_map(|r| r.iter().find(|(n, _)| *n == "Name").map(|(_, v)| v.clone()))
                .collect();
            for row in self.table_mut(&ACCOUNT_PROJECT).iter_mut() {
                if names.contains(&row.values[1]) {
                    row.deleted = true;
                }
            }
        }
        let verb = if delete { "deleted" } else { "undeleted" };
        Ok(Outcome {
            // Gold refreshes its metadata cache after a user delete and says so.
            code: if delete && class.name == "User" {
                "080"
            } else {
                "000"
            },
            message: format!("Successfully {verb} {}", class.count(rows.len())),
            object: class.name,
            rows,
        })
    }

    /// Deposit on an account: into the allocation with the same time window, or a new one.
    fn deposit(&mut self, req: &Req, now: i64) -> Result<Outcome, Fail> {
        let Some(account) = option(req, "Id", Kind::Int)? else {
            return fail("740", "An account Id must be specified (Option Id)");
        };
        let Some(amount) = option(req, "Amount", Kind::Int)? else {
            return fail("740", "An Amount must be specified (Option Amount)");
        };
        let amount: i64 = amount.parse().unwrap_or(0);
        if amount <= 0 {
            return fail("740", format!("Invalid Amount {amount}: must be positive"));
        }
        let start = option(req, "StartTime", Kind::Time)?.unwrap_or("0");
        let end = option(req, "EndTime", Kind::Time)?.unwrap_or("2147483647");
        if compare_values(Kind::Time, start, end).is_ge() {
            return fail("740", "StartTime must precede EndTime");
        }
        let credit = option(req, "CreditLimit", Kind::Int)?;
        let description = req.option("Description");
        if !self.exists("Account", "Id", account) {
            return fail("740", format!("Account {account} does not exist"));
        }
        let class = &ALLOCATION;
        let field = |n: &str| {
            class.index(n).ok_or_else(|| Fail {
                code: "720",
                message: format!("Allocation has no {n}"),
            })
        };
        let (id, acct, st, et) = (
            field("Id")?,
            field("Account")?,
            field("StartTime")?,
            field("EndTime")?,
        );
        let (amt, dep, cl) = (field("Amount")?, field("Deposited")?, field("CreditLimit")?);
        let same_window = |r: &Row| {
            !r.deleted && r.values[acct] == account && r.values[st] == start && r.values[et] == end
        };
        let position = self.table(class).iter().position(same_window);
        let mut row = match position {
            Some(p) => self.table(class)[p].clone(),
            None => {
                let mut values: Vec<String> =
                    class.attrs.iter().map(|a| a.default.into()).collect();
                values[acct] = account.into();
                values[st] = start.into();
                values[et] = end.into();
                Row {
                    values,
                    deleted: false,
                }
            }
        };
        for i in [amt, dep] {
            let sum = row.values[i]
                .parse::<i64>()
                .ok()
                .and_then(|v| v.checked_add(amount));
            let Some(sum) = sum else {
                return fail("740", "The deposit overflows the allocation");
            };
            row.values[i] = sum.to_string();
        }
        if let Some(c) = credit {
            row.values[cl] = c.into();
        }
        match position {
            Some(p) => self.table_mut(class)[p] = row.clone(),
            None => {
                row.values[id] = self.next_id(class).to_string();
                self.table_mut(class).push(row.clone());
            }
        }
        // The deposit's Description lands on its transaction record, not on the allocation.
        let description = sql_literal(description.unwrap_or(""))?;
        let t = &TRANSACTION;
        let mut tx: Vec<String> = t.attrs.iter().map(|a| a.default.into()).collect();
        tx[0] = self.next_id(t).to_string();
        for (name, value) in [
            ("Object", "Account"),
            ("Action", "Deposit"),
            ("Account", account),
            ("Amount", &amount.to_string()),
            ("Description", &description),
        ] {
            if let Some(i) = t.index(name) {
                tx[i] = value.to_string();
            }
        }
        self.table_mut(t).push(Row {
            values: tx,
            deleted: false,
        });
        Ok(Outcome {
            code: "000",
            message: format!("Successfully deposited {amount} credits into account {account}"),
            object: class.name,
            rows: vec![view(class, &row, &all_columns(class, false), now)],
        })
    }

    /// Non-empty references must name live objects (740).
    fn check_references(&self, class: &Class, sets: &[Assignment]) -> Result<(), Fail> {
        for s in sets {
            let name = class.attrs[s.index].name;
            let target = REFERENCES
                .iter()
                .find(|(c, a, _, _)| *c == class.name && *a == name);
            if let Some((_, _, object, key)) = target
                && !s.value.is_empty()
                && !self.exists(object, key, &s.value)
            {
                return fail(
                    "740",
                    format!(
                        "Invalid {name}: {object} {} does not exist (not a valid value)",
                        s.value
                    ),
                );
            }
        }
        Ok(())
    }
}

/// An option's value checked against a type (317); `None` when absent.
fn option<'r>(req: &'r Req, name: &'static str, kind: Kind) -> Result<Option<&'r str>, Fail> {
    match req.option(name) {
        None => Ok(None),
        Some(v) => {
            check_value(&attr(name, kind, "", Role::Plain), v)?;
            Ok(Some(v))
        }
    }
}

/// The Sets of a Create (`creating`) or Modify, checked: names (318), values and ops (317),
/// what may be set at all (740).
fn assignments(class: &Class, sets: &[Set], creating: bool) -> Result<Vec<Assignment>, Fail> {
    let mut out = Vec::with_capacity(sets.len());
    for s in sets {
        let Column::Attr(index) = class.lookup(&s.name)? else {
            return fail("740", "Deleted cannot be set: use Delete or Undelete");
        };
        let a = &class.attrs[index];
        match a.role {
            Role::AutoId => return fail("740", format!("{} is assigned by the server", a.name)),
            Role::Computed => return fail("740", format!("{} is computed", a.name)),
            Role::Key if !creating => {
                return fail("740", format!("{} cannot be modified", a.name));
            }
            _ => {}
        }
        let op = match s.op.as_deref() {
            None | Some("Assign") => SetOp::Assign,
            Some("Inc") if !creating && a.kind == Kind::Int => SetOp::Inc,
            Some("Dec") if !creating && a.kind == Kind::Int => SetOp::Dec,
            Some(other) => {
                return fail("317", format!("Invalid op {other:?} for Set {}", a.name));
            }
        };
        let value = sql_literal(&s.value)?;
        check_value(a, &value)?;
        // A later Set of the same attribute wins.
        out.retain(|x: &Assignment| x.index != index);
        out.push(Assignment { index, value, op });
    }
    Ok(out)
}

/// The new value of an attribute after a Set.
fn assign(current: &str, s: &Assignment) -> Result<String, Fail> {
    if s.op == SetOp::Assign {
        return Ok(s.value.clone());
    }
    let (Ok(a), Ok(b)) = (current.parse::<i64>(), s.value.parse::<i64>()) else {
        return fail("317", format!("Cannot change {current:?} by {:?}", s.value));
    };
    let v = if s.op == SetOp::Inc {
        a.checked_add(b)
    } else {
        a.checked_sub(b)
    };
    match v {
        Some(v) => Ok(v.to_string()),
        None => fail("740", "The change overflows the value"),
    }
}

/// Every attribute, and `Deleted` when hidden ones are shown.
fn all_columns(class: &Class, show_hidden: bool) -> Vec<Column> {
    let mut c: Vec<Column> = (0..class.attrs.len()).map(Column::Attr).collect();
    if show_hidden {
        c.push(Column::Deleted);
    }
    c
}

/// A row as a reply shows it.
fn view(class: &Class, row: &Row, columns: &[Column], now: i64) -> Vec<(&'static str, String)> {
    columns
        .iter()
        .map(|&c| (class.attr_of(c).name, row.column(class, c, now)))
        .collect()
}

/// `bob`, or `(Project=biology, Name=bob)` for composite keys.
fn describe_key(class: &Class, values: &[String]) -> String {
    let key: Vec<usize> = class.key().collect();
    match key[..] {
        [i] => values[i].clone(),
        _ => format!(
            "({})",
            key.iter()
                .map(|&i| format!("{}={}", class.attrs[i].name, values[i]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(name: &str, value: &str, op: Option<&str>, conj: Option<&str>, group: i32) -> Cond {
        Cond {
            name: name.into(),
            value: value.into(),
            op: op.map(String::from),
            conj: conj.map(String::from),
            group,
        }
    }

    fn user(name: &str, active: &str) -> Row {
        let mut values: Vec<String> = USER.attrs.iter().map(|a| a.default.into()).collect();
        values[0] = name.into();
        values[1] = active.into();
        Row {
            values,
            deleted: false,
        }
    }

    #[test]
    fn match_is_an_anchored_like() {
        assert!(like("b*", "bob"));
        assert!(like("*o*", "bob"));
        assert!(like("b?b", "bob"));
        assert!(like("b_b", "bob"));
        assert!(like("%", ""));
        assert!(!like("o", "bob"));
        assert!(!like("b?", "bob"));
        assert!(like("a*b*c", "aXbYbZc"));
        assert!(!like("a*b*c", "aXbYbZ"));
    }

    #[test]
    fn conditions_combine_with_sql_precedence_and_groups() {
        let (amy, bob, cy) = (
            user("amy", "True"),
            user("bob", "False"),
            user("cy", "False"),
        );
        let names = |conds: &[Cond]| -> Vec<String> {
            let f = Filter::compile(&USER, conds).unwrap();
            [&amy, &bob, &cy]
                .into_iter()
                .filter(|r| f.matches(&USER, r, 0))
                .map(|r| r.values[0].clone())
                .collect()
        };
        // amy OR (bob AND Active=True): AND binds tighter.
        let plain = [
            cond("Name", "amy", None, None, 0),
            cond("Name", "bob", None, Some("Or"), 0),
            cond("Active", "True", None, Some("And"), 0),
        ];
        assert_eq!(names(&plain), ["amy"]);
        // (amy OR bob) AND Active=False
        let grouped = [
            cond("Name", "amy", None, None, 1),
            cond("Name", "bob", None, Some("Or"), -1),
            cond("Active", "False", None, Some("And"), 0),
        ];
        assert_eq!(names(&grouped), ["bob"]);
        let not = [
            cond("Active", "False", None, None, 0),
            cond("Name", "c*", Some("Match"), Some("AndNot"), 0),
        ];
        assert_eq!(names(&not), ["bob"]);
        assert_eq!(
            names(&[cond("Name", "b", Some("GT"), None, 0)]),
            ["bob", "cy"]
        );
        for bad in [
            vec![cond("Name", "amy", None, None, 1)],
            vec![cond("Active", "yes", None, None, 0)],
            vec![cond("Name", "amy", Some("Like"), None, 0)],
            vec![cond("Name", "amy", None, None, 40)],
        ] {
            assert_eq!(Filter::compile(&USER, &bad).unwrap_err().code, "317");
        }
        assert_eq!(
            Filter::compile(&USER, &[cond("name", "amy", None, None, 0)])
                .unwrap_err()
                .code,
            "318"
        );
    }

    #[test]
    fn numbers_compare_numerically_text_bytewise() {
        assert!(compare_values(Kind::Int, "9", "10").is_lt());
        assert!(compare_values(Kind::Text, "9", "10").is_gt());
        assert!(compare_values(Kind::Text, "007", "7").is_ne());
    }

    #[test]
    fn head_checks_in_order() {
        let ok = b"POST /SSSRMAP3 HTTP/1.1\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nTransfer-Encoding: chunked";
        assert_eq!(check_head(ok), Ok(()));
        let status = |h: &[u8]| match check_head(h) {
            Err(Refusal::Http(s, _)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"GET /SSSRMAP3 HTTP/1.1"), 405);
        assert_eq!(
            status(b"POST /other HTTP/1.1\r\nContent-Type: text/xml"),
            404
        );
        assert_eq!(
            status(b"POST /gold HTTP/1.1\r\nContent-Type: text/html"),
            412
        );
        assert_eq!(
            status(b"POST /gold HTTP/1.1\r\nContent-Type: text/xml\r\nContent-Length: 5"),
            400
        );
        assert_eq!(status(b"POST /gold"), 400);
    }

    #[test]
    fn latin1_is_one_byte_per_character() {
        assert_eq!(latin1("aé"), Some(vec![b'a', 0xe9]));
        assert_eq!(latin1("€"), None);
    }
}
