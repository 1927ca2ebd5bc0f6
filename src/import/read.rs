//! The ImportSource readers: a CSV text, a search in an upstream LDAP directory or a query on
//! MySQL/MariaDB, each turned into [`Row`]s of named text fields. The import engine maps the
//! fields (and splits list cells); nothing here interprets them.
//!
//! A source that cannot be read is always a [`ReadError`], never an empty list: an import that
//! took an unreachable server for "everybody left" would start removing every identity it owns.
//! Rows that cannot be read (a CSV line with the wrong number of cells, bad quoting) are
//! [`RowError`]s next to the good rows, so the import can count them against `toleratedErrors`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::api::{CsvReader, LdapReader};

/// The most a reader accepts: CSV text, or the field text of an LDAP or SQL result.
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;
/// Entries per page of the LDAP search (Simple Paged Results, RFC 2696).
pub const LDAP_PAGE_SIZE: i32 = 500;
/// The LDAP search filter when `filter` is absent.
pub const DEFAULT_LDAP_FILTER: &str = "(objectClass=*)";
/// How long connecting (including TLS and StartTLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one operation may take: an LDAP bind, the wait for each reply of a search, an SQL
/// query with the transfer of its result.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// The delimiters detection chooses from, in order of preference on a tie.
const DELIMITER_CANDIDATES: [char; 4] = [',', ';', '\t', '|'];

/// One source record: its 1-based row number (CSV: the line number in the file; LDAP/SQL: the position) and its columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub number: usize,
    pub fields: BTreeMap<String, String>,
}

/// A row that could not be read (a CSV line with the wrong number of cells, bad quoting …), kept so the import can count it against toleratedErrors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub row: usize,
    pub message: String,
}

/// Why a source could not be read at all. Messages name the file position, server, entry or
/// column at fault; they never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The reader's settings cannot work; nothing was contacted.
    #[error("{0}")]
    Settings(String),
    /// The input exceeds [`MAX_INPUT_BYTES`].
    #[error("the {what} is larger than {} MiB; Roster refuses to import it", MAX_INPUT_BYTES / (1024 * 1024))]
    TooLarge { what: &'static str },
    /// The CSV bytes are not UTF-8.
    #[error(
        "the CSV file is not UTF-8 (the first invalid byte is on line {line}); export it as UTF-8"
    )]
    NotUtf8 { line: usize },
    /// A quoted CSV cell runs to the end of the file.
    #[error(
        "the CSV file ends inside the quoted cell that starts on line {line}: its closing quote is missing"
    )]
    UnterminatedQuote { line: usize },
    /// The file has fewer header lines than configured.
    #[error("the CSV file ends within its {header_lines} header lines")]
    ShortHeader { header_lines: usize },
    /// The line naming the columns is unusable.
    #[error("the CSV header (line {line}): {message}")]
    BadHeader { line: usize, message: String },
    /// Two columns of the CSV header have the same name.
    #[error(
        "the CSV header (line {line}) names two columns {name:?} (columns {first} and {second}); column names must be unique"
    )]
    DuplicateColumn {
        line: usize,
        name: String,
        first: usize,
        second: usize,
    },
    /// The LDAP server did not answer (refused, unresolvable, timed out).
    #[error("cannot reach the LDAP server {url}: {message}")]
    LdapUnreachable { url: String, message: String },
    /// TLS or StartTLS with the LDAP server failed.
    #[error("TLS with the LDAP server {url} failed: {message}")]
    LdapTls { url: String, message: String },
    /// The LDAP server refused the bind.
    #[error("the LDAP server {url} refused the bind as {dn}: {message}")]
    LdapBind {
        url: String,
        dn: String,
        message: String,
    },
    /// The search base does not exist.
    #[error("the LDAP server {url} has no entry {base} (the search base)")]
    LdapNoSuchBase { url: String, base: String },
    /// The search failed otherwise.
    #[error("the LDAP search below {base} on {url} failed: {message}")]
    LdapSearch {
        url: String,
        base: String,
        message: String,
    },
    /// The DSN cannot be parsed.
    #[error("the SQL DSN is invalid: {0} (expected mysql://user:password@host:port/database)")]
    SqlDsn(String),
    /// The database server did not answer.
    #[error("cannot connect to the database server {server}: {message}")]
    SqlUnreachable { server: String, message: String },
    /// The database server refused the login or the database.
    #[error("the database server {server} refused user {user:?}: {message}")]
    SqlLogin {
        server: String,
        user: String,
        message: String,
    },
    /// The query failed or returned something else than one result set.
    #[error("the SQL query on {server} failed: {message}")]
    SqlQuery { server: String, message: String },
    /// Two result columns have the same name.
    #[error(
        "the SQL query on {server} returns two columns named {name:?} (columns {first} and {second}); give them distinct names with AS"
    )]
    SqlDuplicateColumn {
        server: String,
        name: String,
        first: usize,
        second: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Checks that CSV bytes (a Secret's or ConfigMap's `binaryData`, a file) are within
/// [`MAX_INPUT_BYTES`] and UTF-8, and returns them as text for [`parse_csv`].
pub fn decode_csv(bytes: &[u8]) -> Result<&str, ReadError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(ReadError::TooLarge { what: "CSV file" });
    }
    std::str::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })
}

/// Reads a CSV file (file mode's `reader.csv.path`, a file from `--secrets-dir`): never more
/// than [`MAX_INPUT_BYTES`] of it (a larger file, or `/dev/zero`, is refused without being read
/// to its end), and only UTF-8 ([`decode_csv`]'s message names the line of the first bad byte).
pub fn read_csv_file(path: &std::path::Path) -> Result<String, ReadError> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| ReadError::Settings(format!("cannot read it: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    decode_csv(&bytes).map(str::to_owned)
}

/// Parses a CSV file: UTF-8 with or without BOM, LF or CRLF line ends, RFC 4180 quoting
/// (delimiters, doubled quotes and line breaks inside quoted cells).
///
/// - `header_lines` (default 1, at most 100) lines precede the data; the last of them names the
///   columns. With 0 the columns are named `1`, `2`, … and the first data row sets their number.
/// - Without a configured `delimiter` it is detected from the column-naming line (the first
///   line when there is no header): the most frequent of `,` `;` tab `|` outside quotes, the
///   earlier one on a tie, `,` when none occurs.
/// - Cells are trimmed of whitespace outside quotes; text inside quotes is kept as it is (a line
///   break inside quotes, CRLF or a lone CR, becomes LF). List cells are not split.
/// - Blank lines, and lines whose cells are all empty (spreadsheets export `;;;`), are skipped
///   everywhere, and do not count as header lines.
/// - A row with another number of cells than the header, or with bad quoting (a quote inside
///   an unquoted cell, text after a closing quote), is a [`RowError`] with its line number.
/// - [`Row::number`] is the line on which the record starts.
///
/// Fatal: more than 64 MiB, a quoted cell still open at the end of the file (it would swallow
/// every row after it), an unusable or short header, duplicate or empty column names, invalid
/// settings. An empty file is zero rows.
pub fn parse_csv(text: &str, opts: &CsvReader) -> Result<(Vec<Row>, Vec<RowError>), ReadError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ReadError::TooLarge { what: "CSV file" });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let header_lines = match opts.header_lines {
        None => 1,
        Some(n @ 0..=100) => n as usize,
        Some(n) => {
            return Err(ReadError::Settings(format!(
                "reader.csv.headerLines is {n}; it must be between 0 and 100"
            )));
        }
    };
    let delimiter = match opts.delimiter.as_deref() {
        Some(d) => configured_delimiter(d)?,
        None => detect_delimiter(text, header_lines.max(1)),
    };
    let mut lexer = Lexer::new(text, delimiter);

    // The header: skip the first header_lines - 1 records, the last one names the columns.
    let mut columns: Option<Vec<String>> = None;
    if header_lines > 0 {
        let mut seen = 0;
        let mut header = None;
        while seen < header_lines {
            match lexer.record()? {
                None => break,
                Some(r) if r.is_blank() => continue,
                Some(r) => {
                    seen += 1;
                    header = Some(r);
                }
            }
        }
        let Some(header) = header else {
            return Ok((Vec::new(), Vec::new()));
        };
        if seen < header_lines {
            return Err(ReadError::ShortHeader { header_lines });
        }
        columns = Some(column_names(header)?);
    }

    let mut rows = Vec::new();
    let mut errors = Vec::new();
    while let Some(record) = lexer.record()? {
        if record.is_blank() {
            continue;
        }
        let names = columns
            .get_or_insert_with(|| (1..=record.cells.len()).map(|i| i.to_string()).collect());
        if let Some(message) = record.problem {
            errors.push(RowError {
                row: record.line,
                message,
            });
            continue;
        }
        if record.cells.len() != names.len() {
            let (n, m) = (record.cells.len(), names.len());
            errors.push(RowError {
                row: record.line,
                message: format!(
                    "{n} cell{} where the {} has {m} column{}",
                    plural(n),
                    if header_lines > 0 {
                        "header"
                    } else {
                        "first row"
                    },
                    plural(m)
                ),
            });
            continue;
        }
        rows.push(Row {
            number: record.line,
            fields: names.iter().cloned().zip(record.cells).collect(),
        });
    }
    Ok((rows, errors))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A configured delimiter: one character that can separate cells.
fn configured_delimiter(d: &str) -> Result<char, ReadError> {
    let mut chars = d.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if !matches!(c, '"' | '\r' | '\n') => Ok(c),
        _ => Err(ReadError::Settings(format!(
            "reader.csv.delimiter {d:?} cannot separate cells: give one character other than a quote or a line break"
        ))),
    }
}

/// The delimiter of the `record`-th non-blank line (quotes respected): the most frequent
/// candidate outside quotes, the earlier candidate on a tie, `,` when there is none.
fn detect_delimiter(text: &str, record: usize) -> char {
    let mut counts = [0usize; DELIMITER_CANDIDATES.len()];
    let mut in_quotes = false;
    let mut content = false;
    let mut seen = 0;
    for c in text.chars() {
        if !in_quotes && (c == '\n' || c == '\r') {
            if content {
                seen += 1;
                if seen == record {
                    break;
                }
            }
            counts = [0; DELIMITER_CANDIDATES.len()];
            content = false;
            continue;
        }
        if c == '"' {
            in_quotes = !in_quotes;
            continue;
        }
        if let Some(i) = DELIMITER_CANDIDATES.iter().position(|&d| d == c) {
            if !in_quotes {
                counts[i] += 1;
            }
        } else if !c.is_whitespace() {
            content = true;
        }
    }
    let best = counts
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| a.cmp(b).then(j.cmp(i)))
        .filter(|(_, n)| **n > 0)
        .map(|(i, _)| i);
    best.map_or(',', |i| DELIMITER_CANDIDATES[i])
}

/// The column names of the header record: present, non-empty and unique.
fn column_names(header: Record) -> Result<Vec<String>, ReadError> {
    let line = header.line;
    if let Some(message) = header.problem {
        return Err(ReadError::BadHeader { line, message });
    }
    let mut first_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in header.cells.iter().enumerate() {
        if name.is_empty() {
            return Err(ReadError::BadHeader {
                line,
                message: format!("column {} has no name", i + 1),
            });
        }
        if let Some(first) = first_of.insert(name, i + 1) {
            return Err(ReadError::DuplicateColumn {
                line,
                name: name.clone(),
                first,
                second: i + 1,
            });
        }
    }
    Ok(header.cells)
}

/// One CSV record (a line, or several when quoted cells contain line breaks).
struct Record {
    /// The line it starts on (1-based).
    line: usize,
    cells: Vec<String>,
    /// The first quoting problem in it.
    problem: Option<String>,
}

impl Record {
    /// A blank line, or one whose cells are all empty or whitespace.
    fn is_blank(&self) -> bool {
        self.problem.is_none() && self.cells.iter().all(|c| c.trim().is_empty())
    }
}

/// How a cell ended.
enum CellEnd {
    Delimiter,
    LineBreak,
    Eof,
}

/// Splits CSV text into records, counting lines.
struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    delimiter: char,
    /// The line the next character is on.
    line: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, delimiter: char) -> Self {
        Lexer {
            chars: text.chars().peekable(),
            delimiter,
            line: 1,
        }
    }

    /// The next record; `None` at the end of the text.
    fn record(&mut self) -> Result<Option<Record>, ReadError> {
        if self.chars.peek().is_none() {
            return Ok(None);
        }
        let line = self.line;
        let mut cells = Vec::new();
        let mut problem = None;
        loop {
            let (cell, end) = self.cell(cells.len() + 1, &mut problem)?;
            cells.push(cell);
            match end {
                CellEnd::Delimiter => {}
                CellEnd::LineBreak | CellEnd::Eof => break,
            }
        }
        Ok(Some(Record {
            line,
            cells,
            problem,
        }))
    }

    /// Consumes a line break starting with `c` (LF, CRLF or a lone CR) and counts it.
    fn line_break(&mut self, c: char) -> bool {
        match c {
            '\n' => {}
            '\r' => {
                if self.chars.peek() == Some(&'\n') {
                    self.chars.next();
                }
            }
            _ => return false,
        }
        self.line += 1;
        true
    }

    /// Whitespace that is neither the delimiter nor a line break.
    fn is_space(delimiter: char, c: char) -> bool {
        c != delimiter && c != '\n' && c != '\r' && c.is_whitespace()
    }

    /// Reads cell number `index` of the record; records the first quoting problem.
    fn cell(
        &mut self,
        index: usize,
        problem: &mut Option<String>,
    ) -> Result<(String, CellEnd), ReadError> {
        let delimiter = self.delimiter;
        while self
            .chars
            .peek()
            .is_some_and(|&c| Self::is_space(delimiter, c))
        {
            self.chars.next();
        }
        let mut value = String::new();
        if self.chars.peek() == Some(&'"') {
            self.chars.next();
            let start = self.line;
            loop {
                match self.chars.next() {
                    None => return Err(ReadError::UnterminatedQuote { line: start }),
                    Some('"') => {
                        if self.chars.peek() == Some(&'"') {
                            self.chars.next();
                            value.push('"');
                        } else {
                            break;
                        }
                    }
                    // LF, CRLF and a lone CR all become LF, so a cell written back quoted
                    // reads the same (`"\r\r\n"` was `\r\n`, then `\n`: found by fuzz/csv_import).
                    Some(c) if self.line_break(c) => value.push('\n'),
                    Some(c) => value.push(c),
                }
            }
            // After the closing quote only whitespace may come before the cell ends.
            loop {
                match self.chars.next() {
                    None => return Ok((value, CellEnd::Eof)),
                    Some(c) if c == self.delimiter => return Ok((value, CellEnd::Delimiter)),
                    Some(c) if self.line_break(c) => return Ok((value, CellEnd::LineBreak)),
                    Some(c) if c.is_whitespace() => {}
                    Some(_) => {
                        problem.get_or_insert_with(|| {
                            format!("cell {index}: text after the closing quote (a quote inside a quoted cell is written twice: \"a \"\"b\"\"\")")
                        });
                    }
                }
            }
        }
        let end = loop {
            match self.chars.next() {
                None => break CellEnd::Eof,
                Some(c) if c == self.delimiter => break CellEnd::Delimiter,
                Some(c) if self.line_break(c) => break CellEnd::LineBreak,
                Some(c) => {
                    if c == '"' {
                        problem.get_or_insert_with(|| {
                            format!("cell {index}: a quote inside an unquoted cell (quote the whole cell and write the quote twice: \"a \"\"b\"\"\")")
                        });
                    }
                    value.push(c);
                }
            }
        };
        value.truncate(value.trim_end().len());
        Ok((value, end))
    }
}

// ---------------------------------------------------------------------------------------------
// LDAP

/// Reads `base_dn` with one paged subtree search (pages of [`LDAP_PAGE_SIZE`]) for `filter`
/// (default [`DEFAULT_LDAP_FILTER`]), all user attributes. Each entry becomes a [`Row`]
/// numbered by its position: every attribute (name as the server returns it) with its values
/// joined by `\n`, plus `dn`. Values that are not UTF-8 (photos, certificates) are base64.
///
/// Binds as `bind_dn` with `password` when given, anonymously otherwise. `ldaps://` URLs use
/// TLS, `start_tls` upgrades an `ldap://` connection; both verify the server against `ca_pem`
/// when given (the system's CAs otherwise). Connecting may take [`CONNECT_TIMEOUT`], each
/// operation [`OPERATION_TIMEOUT`].
pub async fn read_ldap(
    opts: &LdapReader,
    password: Option<&str>,
    ca_pem: Option<&str>,
) -> Result<Vec<Row>, ReadError> {
    let url = opts.url.as_str();
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let ldaps = match scheme.as_deref() {
        Some("ldap") => false,
        Some("ldaps") => true,
        _ => {
            return Err(ReadError::Settings(format!(
                "reader.ldap.url {url:?} must start with ldap:// or ldaps://"
            )));
        }
    };
    if ldaps && opts.start_tls {
        return Err(ReadError::Settings(format!(
            "reader.ldap.startTLS is set for the ldaps:// URL {url}: ldaps is TLS already; use one of them"
        )));
    }
    if ca_pem.is_some() && !ldaps && !opts.start_tls {
        return Err(ReadError::Settings(format!(
            "reader.ldap.caRef is set but the connection to {url} would not use TLS: use an ldaps:// URL or startTLS"
        )));
    }
    let bind = match (opts.bind_dn.as_deref(), password) {
        (Some(dn), Some(pw)) if !pw.is_empty() => Some((dn, pw)),
        (Some(dn), _) => {
            return Err(ReadError::Settings(format!(
                "reader.ldap.bindDN {dn} is set but no bind password was given (bindPasswordRef); an empty password would be an unauthenticated bind"
            )));
        }
        (None, Some(_)) => {
            return Err(ReadError::Settings(
                "a bind password was given without reader.ldap.bindDN".into(),
            ));
        }
        (None, None) => None,
    };

    let mut settings = ldap3::LdapConnSettings::new()
        .set_conn_timeout(CONNECT_TIMEOUT)
        .set_starttls(opts.start_tls);
    if let Some(pem) = ca_pem {
        let tls = tls_config(pem).map_err(|message| ReadError::LdapTls {
            url: url.to_string(),
            message,
        })?;
        settings = settings.set_config(tls);
    }
    let tls = ldaps || opts.start_tls;
    let connect = ldap3::LdapConnAsync::with_settings(settings, url);
    let (conn, mut ldap) = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => {
            return Err(ReadError::LdapUnreachable {
                url: url.to_string(),
                message: format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
            });
        }
        Ok(Err(e)) => return Err(connect_error(url, tls, e)),
        Ok(Ok(pair)) => pair,
    };
    ldap3::drive!(conn);

    if let Some((dn, pw)) = bind {
        let result = ldap
            .with_timeout(OPERATION_TIMEOUT)
            .simple_bind(dn, pw)
            .await
            .map_err(|e| ReadError::LdapUnreachable {
                url: url.to_string(),
                message: format!("the bind got no answer: {e}"),
            })?;
        if result.rc != 0 {
            let message = match result.rc {
                49 => "invalid credentials (wrong bind DN or password, or the account is locked)"
                    .to_string(),
                rc => format!("result code {rc}: {}", result.text),
            };
            return Err(ReadError::LdapBind {
                url: url.to_string(),
                dn: dn.to_string(),
                message,
            });
        }
    }

    let rows = search(&mut ldap, opts).await;
    let _ = ldap.unbind().await;
    rows
}

/// The paged search of [`read_ldap`] on a bound connection.
async fn search(ldap: &mut ldap3::Ldap, opts: &LdapReader) -> Result<Vec<Row>, ReadError> {
    use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
    let url = opts.url.as_str();
    let base = opts.base_dn.as_str();
    let filter = opts
        .filter
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or(DEFAULT_LDAP_FILTER);
    let failed = |message: String| ReadError::LdapSearch {
        url: url.to_string(),
        base: base.to_string(),
        message,
    };
    let search_error = |e: ldap3::LdapError| match e {
        ldap3::LdapError::FilterParsing => failed(format!("the filter {filter:?} is not valid")),
        ldap3::LdapError::LdapResult { result } if result.rc == 32 => ReadError::LdapNoSuchBase {
            url: url.to_string(),
            base: base.to_string(),
        },
        ldap3::LdapError::Timeout { .. } => failed(format!(
            "no answer within {} s",
            OPERATION_TIMEOUT.as_secs()
        )),
        e => failed(e.to_string()),
    };
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(LDAP_PAGE_SIZE)),
    ];
    let mut stream = ldap
        .with_timeout(OPERATION_TIMEOUT)
        .streaming_search_with(adapters, base, ldap3::Scope::Subtree, filter, vec!["*"])
        .await
        .map_err(search_error)?;
    let mut rows = Vec::new();
    let mut size = 0usize;
    while let Some(entry) = stream.next().await.map_err(search_error)? {
        let entry = ldap3::SearchEntry::construct(entry);
        let mut fields = BTreeMap::new();
        for (name, values) in entry.attrs {
            fields.insert(name, values.join("\n"));
        }
        for (name, values) in entry.bin_attrs {
            let b64 = values
                .iter()
                .map(|v| base64::engine::general_purpose::STANDARD.encode(v));
            // An attribute can have UTF-8 and binary values; keep both.
            let text: Vec<String> = fields
                .remove(&name)
                .into_iter()
                .chain(b64)
                .collect::<Vec<_>>();
            fields.insert(name, text.join("\n"));
        }
        fields.insert("dn".to_string(), entry.dn);
        size += fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if size > MAX_INPUT_BYTES {
            let _ = stream.finish().await;
            return Err(ReadError::TooLarge {
                what: "LDAP search result",
            });
        }
        rows.push(Row {
            number: rows.len() + 1,
            fields,
        });
    }
    let result = stream.finish().await;
    let detail = if result.text.is_empty() {
        String::new()
    } else {
        format!(" ({})", result.text)
    };
    match result.rc {
        0 => Ok(rows),
        32 => Err(ReadError::LdapNoSuchBase {
            url: url.to_string(),
            base: base.to_string(),
        }),
        4 => Err(failed(format!(
            "the server's size limit was exceeded{detail}; a partial list is not read: raise the bind DN's size limit (for paged searches too)"
        ))),
        11 => Err(failed(format!(
            "an administrative limit was exceeded{detail}; raise it for the bind DN"
        ))),
        50 => Err(failed(format!(
            "insufficient access{detail}: the bind DN may not search there"
        ))),
        rc => Err(failed(format!("result code {rc}{detail}"))),
    }
}

/// An error while connecting: TLS/StartTLS trouble or an unreachable server.
fn connect_error(url: &str, tls: bool, e: ldap3::LdapError) -> ReadError {
    let url = url.to_string();
    match e {
        ldap3::LdapError::Rustls { .. } | ldap3::LdapError::DNSName { .. } => ReadError::LdapTls {
            url,
            message: e.to_string(),
        },
        ldap3::LdapError::LdapResult { result } => ReadError::LdapTls {
            url,
            message: format!(
                "the server refused StartTLS (result code {}: {})",
                result.rc,
                if result.text.is_empty() {
                    "no TLS configured?"
                } else {
                    &result.text
                }
            ),
        },
        ldap3::LdapError::Io { source } if tls && is_tls_failure(&source) => ReadError::LdapTls {
            url,
            message: format!(
                "the handshake failed: {source} (does the server speak TLS on this port?)"
            ),
        },
        e => ReadError::LdapUnreachable {
            url,
            message: e.to_string(),
        },
    }
}

/// Whether an I/O error came from the TLS handshake rather than the network: rustls refused
/// the server (certificate, protocol), or the server hung up on the ClientHello.
fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        || matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        )
}

/// A rustls client configuration trusting exactly the certificates in `pem`.
fn tls_config(pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("bad certificate in the CA PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable certificate in the CA PEM: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA PEM holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// SQL

/// Runs `query` on the MySQL/MariaDB server of `dsn` (`mysql://user:password@host:port/db`)
/// in a read-only session and returns each result row as a [`Row`] numbered by its position:
/// column name → value as text (NULL → empty string; numbers, dates and times as MySQL prints
/// them; bytes that are not UTF-8 as base64).
///
/// The query must return exactly one result set with uniquely named columns. Connecting may
/// take [`CONNECT_TIMEOUT`], the query with its result [`OPERATION_TIMEOUT`]. The DSN's
/// password appears in no message.
pub async fn read_sql(dsn: &str, query: &str) -> Result<Vec<Row>, ReadError> {
    let secret = dsn_password(dsn);
    let redact = |message: String| match &secret {
        Some(pw) if !pw.is_empty() => message.replace(pw.as_str(), "***"),
        _ => message,
    };
    let opts = mysql_async::Opts::from_url(dsn).map_err(|e| {
        // The DSN holds a password: name the problem, never the URL.
        ReadError::SqlDsn(redact(match e {
            mysql_async::UrlError::Parse(p) => p.to_string(),
            mysql_async::UrlError::UnsupportedScheme { scheme } => {
                format!("the scheme {scheme:?} is not mysql")
            }
            mysql_async::UrlError::UnknownParameter { param } => {
                format!("unknown parameter {param:?}")
            }
            mysql_async::UrlError::InvalidParamValue { param, .. } => {
                format!("invalid value of the parameter {param:?}")
            }
            other => other.to_string(),
        }))
    })?;
    let server = format!(
        "{}:{}/{}",
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("")
    );
    let user = opts.user().unwrap_or("").to_string();
    let unreachable = |message: String| ReadError::SqlUnreachable {
        server: server.clone(),
        message,
    };
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
        Err(_) => {
            return Err(unreachable(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(mysql_async::Error::Server(s))) => {
            return Err(ReadError::SqlLogin {
                server: server.clone(),
                user,
                message: redact(format!("error {}: {}", s.code, s.message)),
            });
        }
        Ok(Err(e)) => return Err(unreachable(redact(sql_message(e)))),
        Ok(Ok(conn)) => conn,
    };
    let result = tokio::time::timeout(OPERATION_TIMEOUT, run_query(&mut conn, query, &server))
        .await
        .unwrap_or_else(|_| {
            Err(ReadError::SqlQuery {
                server: server.clone(),
                message: format!("no result within {} s", OPERATION_TIMEOUT.as_secs()),
            })
        });
    // After a timeout the connection may be stuck mid-result: do not wait for it long.
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.disconnect()).await;
    result.map_err(|e| match e {
        ReadError::SqlQuery { server, message } => ReadError::SqlQuery {
            server,
            message: redact(message),
        },
        e => e,
    })
}

/// The query of [`read_sql`] on an open connection.
async fn run_query(
    conn: &mut mysql_async::Conn,
    query: &str,
    server: &str,
) -> Result<Vec<Row>, ReadError> {
    use mysql_async::prelude::Queryable;
    let failed = |message: String| ReadError::SqlQuery {
        server: server.to_string(),
        message,
    };
    let error = |e: mysql_async::Error| failed(sql_message(e));
    // Writes fail in a read-only session; an import only reads.
    conn.query_drop("SET SESSION TRANSACTION READ ONLY")
        .await
        .map_err(error)?;
    let mut result = conn.query_iter(query).await.map_err(error)?;
    let columns = result.columns_ref().to_vec();
    if columns.is_empty() {
        let _ = result.drop_result().await;
        return Err(failed(
            "the statement returned no result set (an import reads with SELECT)".into(),
        ));
    }
    let mut names = Vec::with_capacity(columns.len());
    let mut first_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, c) in columns.iter().enumerate() {
        let name = c.name_str().into_owned();
        if let Some(first) = first_of.insert(name.clone(), i + 1) {
            return Err(ReadError::SqlDuplicateColumn {
                server: server.to_string(),
                name,
                first,
                second: i + 1,
            });
        }
        names.push(name);
    }
    let mut rows = Vec::new();
    let mut size = 0usize;
    while let Some(row) = result.next().await.map_err(error)? {
        let mut fields = BTreeMap::new();
        for (name, value) in names.iter().zip(row.unwrap()) {
            let text = value_text(value);
            size += name.len() + text.len();
            fields.insert(name.clone(), text);
        }
        if size > MAX_INPUT_BYTES {
            return Err(ReadError::TooLarge {
                what: "SQL query result",
            });
        }
        rows.push(Row {
            number: rows.len() + 1,
            fields,
        });
    }
    // Several statements are a mistake, not more rows.
    if !result.is_empty() {
        result.drop_result().await.map_err(error)?;
        return Err(failed(
            "the query holds more than one statement; give one SELECT".into(),
        ));
    }
    Ok(rows)
}

/// A driver error as a message without the DSN.
fn sql_message(e: mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("error {}: {}", s.code, s.message),
        mysql_async::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// A column value as text, as the mysql client prints it.
fn value_text(value: mysql_async::Value) -> String {
    use mysql_async::Value;
    match value {
        Value::NULL => String::new(),
        Value::Bytes(b) => String::from_utf8(b)
            .unwrap_or_else(|e| base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Double(x) => x.to_string(),
        Value::Date(y, mo, d, h, mi, s, us) => {
            let mut t = format!("{y:04}-{mo:02}-{d:02}");
            if (h, mi, s, us) != (0, 0, 0, 0) {
                t.push_str(&format!(" {h:02}:{mi:02}:{s:02}"));
                if us != 0 {
                    t.push_str(&format!(".{us:06}"));
                }
            }
            t
        }
        Value::Time(negative, days, h, mi, s, us) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let mut t = format!(
                "{}{hours:02}:{mi:02}:{s:02}",
                if negative { "-" } else { "" }
            );
            if us != 0 {
                t.push_str(&format!(".{us:06}"));
            }
            t
        }
    }
}

/// The password in a `scheme://user:password@host…` DSN as written (percent-encoded), for
/// redacting it from messages.
fn dsn_password(dsn: &str) -> Option<String> {
    let rest = dsn.split_once("://").map_or(dsn, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> (Vec<Row>, Vec<RowError>) {
        parse_csv(text, &CsvReader::default()).expect("parses")
    }

    fn with(delimiter: Option<&str>, header_lines: Option<i32>) -> CsvReader {
        CsvReader {
            delimiter: delimiter.map(str::to_string),
            header_lines,
            ..CsvReader::default()
        }
    }

    fn fields(row: &Row) -> Vec<(&str, &str)> {
        row.fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn a_csv_file_is_read_bounded_and_only_as_utf8() {
        let dir = std::env::temp_dir().join(format!("roster-read-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let latin1 = dir.join("latin1.csv");
        std::fs::write(&latin1, b"id,first\n1,Ann\n2,J\xfcrgen\n").unwrap();
        assert_eq!(
            read_csv_file(&latin1).unwrap_err().to_string(),
            "the CSV file is not UTF-8 (the first invalid byte is on line 3); export it as UTF-8"
        );
        let big = dir.join("big.csv");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_INPUT_BYTES as u64 + 1).unwrap();
        assert!(matches!(
            read_csv_file(&big),
            Err(ReadError::TooLarge { what: "CSV file" })
        ));
        // A device that never ends is cut at the limit, not read forever.
        assert!(matches!(
            read_csv_file(std::path::Path::new("/dev/zero")),
            Err(ReadError::TooLarge { .. })
        ));
        let missing = read_csv_file(&dir.join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(missing.starts_with("cannot read it: "), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_plain_file_gives_rows_numbered_by_line() {
        let (rows, errors) = csv("id,name\n1,Ada\n2,Grace\n");
        assert!(errors.is_empty());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].number, 2);
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", "Ada")]);
        assert_eq!(rows[1].number, 3);
        assert_eq!(fields(&rows[1]), [("id", "2"), ("name", "Grace")]);
    }

    #[test]
    fn bom_and_crlf_are_handled() {
        let (rows, errors) = csv("\u{feff}id,name\r\n1,Ada\r\n2,Grace\r\n");
        assert!(errors.is_empty());
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", "Ada")]);
        assert_eq!(fields(&rows[1]), [("id", "2"), ("name", "Grace")]);
        assert_eq!(rows[1].number, 3);
    }

    #[test]
    fn the_delimiter_is_detected_from_the_header() {
        let (rows, _) = csv("id;name;mail\n1;Müller, Jörg;j@x\n");
        assert_eq!(
            fields(&rows[0]),
            [("id", "1"), ("mail", "j@x"), ("name", "Müller, Jörg")]
        );
        let (rows, _) = csv("id\tname\n1\tAda Lovelace\n");
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", "Ada Lovelace")]);
        let (rows, _) = csv("id|name\n1|Ada\n");
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", "Ada")]);
        // Delimiters inside quotes do not count.
        let (rows, _) = csv("\"a,b,c\";d\n1;2\n");
        assert_eq!(fields(&rows[0]), [("a,b,c", "1"), ("d", "2")]);
        // One column: nothing to detect.
        let (rows, _) = csv("name\nAda\n");
        assert_eq!(fields(&rows[0]), [("name", "Ada")]);
    }

    #[test]
    fn detection_prefers_the_earlier_candidate_on_a_tie_and_uses_the_last_header_line() {
        assert_eq!(detect_delimiter("a,b;c\n", 1), ',');
        assert_eq!(detect_delimiter("a|b\tc\n", 1), '\t');
        assert_eq!(detect_delimiter("title, exported 2024\n\na;b;c\n", 2), ';');
        assert_eq!(detect_delimiter("", 1), ',');
    }

    #[test]
    fn a_configured_delimiter_wins() {
        let (rows, errors) = parse_csv("a;b,c\n1;2,3\n", &with(Some(";"), None)).unwrap();
        assert!(errors.is_empty());
        assert_eq!(fields(&rows[0]), [("a", "1"), ("b,c", "2,3")]);
        for bad in ["", ";;", "\"", "\n"] {
            let e = parse_csv("a\n", &with(Some(bad), None)).unwrap_err();
            assert!(matches!(e, ReadError::Settings(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn quoted_cells_keep_delimiters_newlines_and_doubled_quotes() {
        let text = "id,name,note\n1,\"Lovelace, Ada\",\"said \"\"hi\"\"\"\n2,Grace,\"two\r\nlines\"\n3,Alan,x\n";
        let (rows, errors) = csv(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            fields(&rows[0]),
            [
                ("id", "1"),
                ("name", "Lovelace, Ada"),
                ("note", "said \"hi\"")
            ]
        );
        assert_eq!(rows[1].fields["note"], "two\nlines");
        assert_eq!(rows[1].number, 3, "a record is numbered by its first line");
        assert_eq!(rows[2].number, 5, "lines inside quotes count");
    }

    #[test]
    fn line_breaks_inside_quotes_become_lf_and_read_back_the_same() {
        let (rows, errors) = csv("id,note\n1,\"a\r\r\nb\rc\"\n2,x\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(rows[0].fields["note"], "a\n\nb\nc");
        assert_eq!(rows[1].number, 6, "each break counts as a line");
        let (again, _) = csv("id,note\n1,\"a\n\nb\nc\"\n");
        assert_eq!(again[0].fields, rows[0].fields);
    }

    #[test]
    fn cells_are_trimmed_outside_quotes_only() {
        let (rows, _) = csv(" id , name \n  1 ,  \" Ada \"  \n");
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", " Ada ")]);
    }

    #[test]
    fn tab_separated_files_keep_their_empty_cells() {
        let (rows, errors) = csv("id\tname\tmail\n1\t\tada@example.org\n2\t Grace \t\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            fields(&rows[0]),
            [("id", "1"), ("mail", "ada@example.org"), ("name", "")]
        );
        assert_eq!(
            fields(&rows[1]),
            [("id", "2"), ("mail", ""), ("name", "Grace")]
        );
    }

    #[test]
    fn a_bad_record_spanning_lines_is_reported_at_its_first_line() {
        let (rows, errors) = csv("id,note\n1,\"two\nlines\",extra\n2,ok\n");
        assert_eq!(
            errors,
            [RowError {
                row: 2,
                message: "3 cells where the header has 2 columns".into()
            }]
        );
        assert_eq!(rows[0].number, 4);
    }

    #[test]
    fn umlauts_and_other_scripts_pass_through() {
        let (rows, _) = csv("vorname;nachname\nJürgen;Öztürk-Weiß\nΑθηνά;ß\n");
        assert_eq!(rows[0].fields["vorname"], "Jürgen");
        assert_eq!(rows[0].fields["nachname"], "Öztürk-Weiß");
        assert_eq!(rows[1].fields["vorname"], "Αθηνά");
    }

    #[test]
    fn two_header_lines_name_the_columns_with_the_second() {
        let text = "HR export 2024-05-01, all staff\nid;name\n1;Ada\n";
        let (rows, errors) = parse_csv(text, &with(None, Some(2))).unwrap();
        assert!(errors.is_empty());
        assert_eq!(rows[0].number, 3);
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", "Ada")]);
    }

    #[test]
    fn without_a_header_columns_are_numbered() {
        let (rows, errors) = parse_csv("1,Ada\n2,Grace,x\n", &with(None, Some(0))).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].number, 1);
        assert_eq!(fields(&rows[0]), [("1", "1"), ("2", "Ada")]);
        assert_eq!(
            errors,
            [RowError {
                row: 2,
                message: "3 cells where the first row has 2 columns".into()
            }]
        );
    }

    #[test]
    fn a_row_with_the_wrong_cell_count_is_a_row_error_with_its_line() {
        let (rows, errors) = csv("id,name\n1,Ada\n2\n3,Grace,extra\n4,Alan\n");
        assert_eq!(rows.iter().map(|r| r.number).collect::<Vec<_>>(), [2, 5]);
        assert_eq!(
            errors,
            [
                RowError {
                    row: 3,
                    message: "1 cell where the header has 2 columns".into()
                },
                RowError {
                    row: 4,
                    message: "3 cells where the header has 2 columns".into()
                }
            ]
        );
    }

    #[test]
    fn bad_quoting_is_a_row_error_and_the_next_line_still_reads() {
        let (rows, errors) = csv("id,name\n1,Ad\"a\n2,\"Grace\"x\n3,Alan\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].number, 4);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].row, 2);
        assert!(
            errors[0].message.contains("cell 2: a quote inside"),
            "{errors:?}"
        );
        assert_eq!(errors[1].row, 3);
        assert!(
            errors[1]
                .message
                .contains("cell 2: text after the closing quote")
        );
    }

    #[test]
    fn an_unterminated_quote_is_fatal() {
        let e =
            parse_csv("id,name\n1,Ada\n2,\"Grace\n3,Alan\n", &CsvReader::default()).unwrap_err();
        assert!(matches!(e, ReadError::UnterminatedQuote { line: 3 }), "{e}");
    }

    #[test]
    fn duplicate_or_empty_column_names_are_errors() {
        let e = parse_csv("id,name,id\n", &CsvReader::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the CSV header (line 1) names two columns \"id\" (columns 1 and 3); column names must be unique"
        );
        let e = parse_csv("id,,name\n", &CsvReader::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the CSV header (line 1): column 2 has no name"
        );
        let e = parse_csv("id,na\"me\n1,2\n", &CsvReader::default()).unwrap_err();
        assert!(matches!(e, ReadError::BadHeader { line: 1, .. }), "{e}");
    }

    #[test]
    fn empty_files_and_blank_lines() {
        assert_eq!(csv(""), (vec![], vec![]));
        assert_eq!(csv("\u{feff}"), (vec![], vec![]));
        assert_eq!(csv("\n\n"), (vec![], vec![]));
        assert_eq!(csv("id,name\n"), (vec![], vec![]));
        let (rows, errors) = csv("id,name\n1,Ada\n\n   \n,\n2,Grace\n\r\n\n");
        assert!(errors.is_empty());
        assert_eq!(rows.iter().map(|r| r.number).collect::<Vec<_>>(), [2, 6]);
        // No line break at the end.
        let (rows, _) = csv("id,name\n1,Ada");
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", "Ada")]);
        // An empty last cell.
        let (rows, _) = csv("id,name\n1,\n");
        assert_eq!(fields(&rows[0]), [("id", "1"), ("name", "")]);
    }

    #[test]
    fn a_file_shorter_than_its_header_is_an_error() {
        let e = parse_csv("title\n", &with(None, Some(2))).unwrap_err();
        assert!(
            matches!(e, ReadError::ShortHeader { header_lines: 2 }),
            "{e}"
        );
        let e = parse_csv("a\n", &with(None, Some(101))).unwrap_err();
        assert!(matches!(e, ReadError::Settings(_)), "{e}");
    }

    #[test]
    fn lists_stay_one_cell() {
        let (rows, _) = csv("id;projects\n1;alpha,beta|gamma\n");
        assert_eq!(rows[0].fields["projects"], "alpha,beta|gamma");
    }

    #[test]
    fn inputs_over_the_cap_are_refused() {
        let big = "a".repeat(MAX_INPUT_BYTES + 1);
        let e = parse_csv(&big, &CsvReader::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the CSV file is larger than 64 MiB; Roster refuses to import it"
        );
        assert!(matches!(
            decode_csv(big.as_bytes()),
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn decode_csv_names_the_line_of_bad_bytes() {
        assert_eq!(decode_csv("a\nb".as_bytes()).unwrap(), "a\nb");
        let e = decode_csv(b"id\n1\nM\xfcller\n").unwrap_err();
        assert!(matches!(e, ReadError::NotUtf8 { line: 3 }), "{e}");
    }

    #[test]
    fn dsn_passwords_are_found_for_redaction() {
        assert_eq!(
            dsn_password("mysql://u:s3cr%40t@h:3306/db").as_deref(),
            Some("s3cr%40t")
        );
        assert_eq!(dsn_password("mysql://u@h/db"), None);
        assert_eq!(dsn_password("mysql://u:p@ss@h/db").as_deref(), Some("p@ss"));
    }

    #[test]
    fn values_render_like_the_mysql_client() {
        use mysql_async::Value;
        assert_eq!(value_text(Value::NULL), "");
        assert_eq!(value_text(Value::Int(-3)), "-3");
        assert_eq!(value_text(Value::UInt(7)), "7");
        assert_eq!(value_text(Value::Bytes("Jörg".into())), "Jörg");
        assert_eq!(value_text(Value::Bytes(vec![0xff, 0x00])), "/wA=");
        assert_eq!(
            value_text(Value::Date(2024, 5, 1, 0, 0, 0, 0)),
            "2024-05-01"
        );
        assert_eq!(
            value_text(Value::Date(2024, 5, 1, 13, 4, 5, 0)),
            "2024-05-01 13:04:05"
        );
        assert_eq!(
            value_text(Value::Time(true, 1, 2, 3, 4, 500)),
            "-26:03:04.000500"
        );
    }

    #[test]
    fn a_ca_pem_without_certificates_is_refused() {
        assert_eq!(
            tls_config("not a pem").unwrap_err(),
            "the CA PEM holds no certificate"
        );
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(tls_config(broken).is_err());
    }
}
