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

mod csv;
mod ldap;
mod sql;

pub use csv::{decode_csv, parse_csv, read_csv_file};
pub use ldap::read_ldap;
pub use sql::read_sql;

#[cfg(test)]
mod tests {
    use super::csv::*;
    use super::ldap::*;
    use super::sql::*;
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
