//! CSV imports: the bytes of an upstream export through `decode_csv` and `parse_csv`
//! (`roster::import::read`), then the import engine's row mapping, username and e-mail
//! generation (`roster::import::engine::run`) for an ImportSource like the example one.
//!
//! The first input byte chooses the reader settings (header lines, delimiter); the rest is the
//! file. Properties besides "no panic":
//! - `decode_csv` accepts exactly UTF-8 and names the line of the first bad byte;
//! - parsed rows all have the header's columns, and row numbers only grow;
//! - parse → write (every cell quoted) → parse gives the same rows: no cell text is lost,
//!   merged or split;
//! - every Person and Account the import derives from the rows passes the same validation as
//!   admission (`validate_object`) — file mode is as strict as the API server — with a
//!   username of the API's rule, unique, and a person for every account.
#![no_main]

use std::collections::BTreeSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use roster::api::validate::validate_object;
use roster::api::{CsvReader, ImportSource};
use roster::import::read::{ReadError, Row, decode_csv, parse_csv};
use roster::site::{Key, Site};

/// The import the rows go through: every column Roster maps, both schemes, tolerant enough
/// that bad rows do not abort the run (so the good ones are always checked).
const SOURCE: &str = r#"
apiVersion: roster.io/v1alpha1
kind: ImportSource
metadata: {name: hr, namespace: physics}
spec:
  sourceUID: fuzz-hr
  reader: {type: Csv, csv: {path: export.csv, listDelimiter: ","}}
  mapping:
    id: employeeNumber
    first: givenName
    last: familyName
    mail: email
    login: username
    shell: loginShell
    until: validUntil
    comment: __ignore
  recordUID: <employeeNumber>
  usernameScheme: {template: "<:umlauts><:lower><firstname>[0]<lastname>[COUNTER2]", maxLength: 12}
  emailScheme: "<:umlauts><:lower><firstname>.<lastname>@physics.example.org"
  defaults: {institute: Institute of Physics, loginShell: /bin/bash, projects: [detector]}
  toleratedErrors: 100000
"#;

const CONFIG: &str = r#"
managerId: fuzz
ldap: {uri: "ldap://127.0.0.1:389", bindDN: "cn=admin,dc=test", bindPasswordFile: pw, baseDN: "dc=test"}
uidRange: {min: 20000, max: 29999}
gidRange: {min: 20000, max: 29999}
"#;

static IMPORT: LazyLock<ImportSource> =
    LazyLock::new(|| serde_saphyr::from_str(SOURCE).expect("the fuzz ImportSource"));
static CONFIG_: LazyLock<roster::config::Config> = LazyLock::new(|| {
    roster::config::Config::parse(CONFIG, "/".into()).expect("the fuzz configuration")
});
static USERNAME: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(roster::api::NAME_PATTERN).unwrap());

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let opts = CsvReader {
        header_lines: match flags & 3 {
            0 => None,
            1 => Some(0),
            2 => Some(2),
            _ => Some(i32::from(flags >> 5) - 1),
        },
        delimiter: match (flags >> 2) & 7 {
            0 | 1 => None,
            2 => Some(",".into()),
            3 => Some(";".into()),
            4 => Some("\t".into()),
            5 => Some("|".into()),
            6 => Some(" ".into()),
            _ => Some("\"".into()),
        },
        ..CsvReader::default()
    };
    let text = match decode_csv(bytes) {
        Ok(t) => t,
        Err(ReadError::NotUtf8 { line }) => {
            let bad = std::str::from_utf8(bytes).expect_err("decode_csv refused UTF-8");
            let before = &bytes[..bad.valid_up_to()];
            assert_eq!(line, 1 + before.iter().filter(|&&b| b == b'\n').count());
            return;
        }
        Err(e) => panic!("decode_csv: {e}"),
    };
    let Ok((rows, errors)) = parse_csv(text, &opts) else {
        return;
    };
    check_rows(&rows, &errors);
    round_trip(&rows);
    import(&rows, &errors);
});

fn check_rows(rows: &[Row], errors: &[roster::import::read::RowError]) {
    if let Some(first) = rows.first() {
        let columns: Vec<&String> = first.fields.keys().collect();
        for r in rows {
            assert_eq!(
                r.fields.keys().collect::<Vec<_>>(),
                columns,
                "row {}",
                r.number
            );
        }
    }
    for w in rows.windows(2) {
        assert!(w[0].number < w[1].number, "rows out of order");
    }
    for w in errors.windows(2) {
        assert!(w[0].row < w[1].row, "row errors out of order");
    }
    assert!(rows.iter().all(|r| r.number >= 1) && errors.iter().all(|e| e.row >= 1));
}

/// Writes the rows back (a header of the column names, every cell quoted) and reads them.
fn round_trip(rows: &[Row]) {
    let Some(first) = rows.first() else {
        return;
    };
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let line = |cells: Vec<&String>| {
        let cells: Vec<String> = cells.into_iter().map(|c| quote(c)).collect();
        cells.join(",") + "\r\n"
    };
    let mut out = line(first.fields.keys().collect());
    for r in rows {
        out.push_str(&line(r.fields.values().collect()));
    }
    let opts = CsvReader {
        delimiter: Some(",".into()),
        ..CsvReader::default()
    };
    let (again, errors) = parse_csv(&out, &opts).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(errors.is_empty(), "{errors:?} in {out:?}");
    let fields = |rs: &[Row]| rs.iter().map(|r| r.fields.clone()).collect::<Vec<_>>();
    assert_eq!(fields(&again), fields(rows), "written as {out:?}");
}

fn import(rows: &[Row], errors: &[roster::import::read::RowError]) {
    let key = Key::new("physics", "hr");
    let now = "2026-01-01T00:00:00Z".parse().unwrap();
    let o = roster::import::engine::run(
        &IMPORT,
        &key,
        rows,
        errors,
        &Site::default(),
        &Default::default(),
        &CONFIG_,
        now,
    );
    if o.aborted.is_some() {
        return;
    }
    assert_eq!(o.people.len(), o.accounts.len());
    let mut usernames = BTreeSet::new();
    for (k, a) in &o.accounts {
        assert!(o.people.contains_key(k), "account {k} without its person");
        let u = &a.spec.username;
        assert!(USERNAME.is_match(u), "imported username {u:?}");
        assert!(usernames.insert(u.clone()), "username {u:?} twice");
        admitted("Account", k, a);
    }
    for (k, p) in &o.people {
        admitted("Person", k, p);
    }
    let numbers: BTreeSet<usize> = rows
        .iter()
        .map(|r| r.number)
        .chain(errors.iter().map(|e| e.row))
        .collect();
    for e in &o.errors {
        assert!(
            numbers.contains(&e.row),
            "an error for row {} of none",
            e.row
        );
    }
    assert!(o.accounts.len() <= rows.len());
}

/// The object passes the API server's validation, under the key it is stored by.
fn admitted<T: serde::Serialize + kube::Resource>(kind: &str, k: &Key, obj: &T) {
    assert_eq!(&Key::of(obj), k);
    let value = serde_json::to_value(obj).unwrap();
    assert_eq!(value["kind"], kind);
    if let Err(errors) = validate_object(&value, None) {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("the import made a {kind} admission refuses: {text:?}\n{value:#}");
    }
}
