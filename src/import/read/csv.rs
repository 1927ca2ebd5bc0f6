//! CSV: a small RFC 4180 lexer (quotes, doubled quotes, line breaks in cells), delimiter
//! detection, header lines, and rows that cannot be read kept apart as [`RowError`]s.
//!
//! Why not the `csv` crate: it is lenient by design, and an export is where leniency loses
//! people. Checked with csv 1.x: a quote left open (`"open,2` followed by more rows) reads as one
//! cell holding the rest of the file, so a 3,000-row export silently becomes a short one, which
//! is the input that locks people; `"x"y` reads as `xy` and `x"y` as `x"y` without a word; and
//! lines ended by a lone CR are all reported as line 1. Here the first is fatal (nothing is
//! imported), the others are row errors with their line numbers (`tests` in `read/mod.rs`), and
//! `fuzz/csv_import` checks the lexer's round trip.

use super::*;

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

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A configured delimiter: one character that can separate cells.
pub(super) fn configured_delimiter(d: &str) -> Result<char, ReadError> {
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
pub(super) fn detect_delimiter(text: &str, record: usize) -> char {
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
pub(super) fn column_names(header: Record) -> Result<Vec<String>, ReadError> {
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
pub(super) struct Record {
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
pub(super) enum CellEnd {
    Delimiter,
    LineBreak,
    Eof,
}

/// Splits CSV text into records, counting lines.
pub(super) struct Lexer<'a> {
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
