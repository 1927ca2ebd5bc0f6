//! `roster guest …`: work with Guests (DESIGN.md §2 "Guest").
//!
//! `roster guest extend NAME --months N` moves a guest's `spec.validUntil` to N months (1, 3, 6,
//! 9 or 12) after the later of today (UTC) and its current `validUntil`, either in a manifest
//! file (edited in place, byte for byte except the one line) or in the cluster (a JSON merge
//! patch guarded by the Guest's `resourceVersion`). The 12-month rule — a new `validUntil` is
//! accepted only up to 12 months after the later of now and `status.acceptedValidUntil` — is the
//! controller's to enforce; this command only offers the steps (and warns, in the cluster, when a
//! step goes past what the controller will accept).

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use jiff::civil::Date;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::api::Guest;

/// The extension steps `roster guest extend` offers, in months.
pub const MONTH_STEPS: [i8; 5] = [1, 3, 6, 9, 12];

/// `roster guest` subcommands.
#[derive(Subcommand, Debug)]
pub enum GuestCommand {
    /// Extend a guest's validUntil by 1, 3, 6, 9 or 12 months from the later of today (UTC) and
    /// its current validUntil: in a manifest file (-f, edited in place) or in the cluster.
    Extend(ExtendArgs),
}

/// Arguments of `roster guest extend`.
#[derive(clap::Args, Debug)]
pub struct ExtendArgs {
    /// The Guest's name (metadata.name).
    pub name: String,
    /// How many months to extend by: 1, 3, 6, 9 or 12.
    #[arg(long, allow_hyphen_values = true)]
    pub months: String,
    /// The Guest's namespace. In the cluster: default from the kubeconfig context. With -f:
    /// only documents in this namespace (or without one) match.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Edit this manifest file (a YAML stream) in place instead of the cluster.
    #[arg(short = 'f', long = "filename")]
    pub file: Option<PathBuf>,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// In the cluster: extend only if the Guest's resourceVersion is still this one (like
    /// `kubectl annotate --resource-version`); default: the one just read.
    #[arg(long)]
    pub resource_version: Option<String>,
    /// Compute as if today (UTC) were this date: for tests and rehearsals.
    #[arg(long, hide = true)]
    pub today: Option<Date>,
}

/// Why an extension failed; the message is meant for the operator at the terminal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ExtendError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, ExtendError> {
    Err(ExtendError(message.into()))
}

/// Runs a `roster guest` command and maps the outcome to the exit code (0 done, 1 error).
pub async fn run(command: GuestCommand) -> ExitCode {
    let GuestCommand::Extend(args) = command;
    let result = match &args.file {
        Some(file) => extend_file(&args, file),
        None => extend_in_cluster(&args).await,
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `--months`: one of [`MONTH_STEPS`].
pub fn parse_months(value: &str) -> Result<i8, ExtendError> {
    match value.trim().parse::<i8>() {
        Ok(n) if MONTH_STEPS.contains(&n) => Ok(n),
        _ => err(format!(
            "--months must be one of 1, 3, 6, 9 or 12 (got {value:?})"
        )),
    }
}

/// The UTC day a `validUntil` value names: the date itself for `YYYY-MM-DD`, the UTC date of
/// the instant for RFC 3339.
pub fn valid_until_date(value: &str) -> Result<Date, ExtendError> {
    let bad = || {
        ExtendError(format!(
            "validUntil {value:?} is not a date (YYYY-MM-DD) or an RFC 3339 timestamp"
        ))
    };
    if value.len() == 10 {
        return value.parse::<Date>().map_err(|_| bad());
    }
    let t: jiff::Timestamp = value.parse().map_err(|_| bad())?;
    Ok(t.to_zoned(jiff::tz::TimeZone::UTC).date())
}

/// The new `validUntil`: `months` calendar months after the later of `today` and `current`
/// (none: today). A day past the end of the target month becomes its last day (Jan 31 + 1 month
/// = Feb 28/29).
pub fn extended_valid_until(
    current: Option<&str>,
    months: i8,
    today: Date,
) -> Result<Date, ExtendError> {
    let base = match current {
        Some(c) => valid_until_date(c)?.max(today),
        None => today,
    };
    base.checked_add(jiff::Span::new().months(months))
        .map_err(|e| ExtendError(format!("cannot add {months} months to {base}: {e}")))
}

fn today_utc(args: &ExtendArgs) -> Date {
    args.today.unwrap_or_else(|| {
        jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
    })
}

fn report(
    namespace: Option<&str>,
    name: &str,
    old: Option<&str>,
    new: Date,
    dry_run: bool,
    target: &str,
) -> String {
    let who = match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };
    let mut line = format!(
        "guest {who}: validUntil {} → {new}",
        old.unwrap_or("(none)")
    );
    if dry_run {
        line.push_str(&format!(" (dry run: {target} not changed)"));
    }
    line
}

// ---------------------------------------------------------------------------------------------
// File mode

/// The result of editing a manifest stream.
#[derive(Debug, PartialEq, Eq)]
pub struct FileEdit {
    /// The Guest's namespace (its document's, else the one asked for).
    pub namespace: Option<String>,
    /// The `validUntil` before.
    pub old: Option<String>,
    /// The new `validUntil`.
    pub new: Date,
    /// The whole stream with the one line replaced or inserted.
    pub text: String,
}

fn extend_file(args: &ExtendArgs, file: &Path) -> Result<String, ExtendError> {
    let months = parse_months(&args.months)?;
    if file == Path::new("-") {
        return err("-f edits a file in place; it cannot be - (stdin)");
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| ExtendError(format!("cannot read {}: {e}", file.display())))?;
    let edit = edit_manifest(
        &text,
        &args.name,
        args.namespace.as_deref(),
        months,
        today_utc(args),
    )
    .map_err(|e| ExtendError(format!("{}: {e}", file.display())))?;
    if !args.dry_run {
        write_atomically(file, &edit.text)
            .map_err(|e| ExtendError(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(report(
        edit.namespace.as_deref(),
        &args.name,
        edit.old.as_deref(),
        edit.new,
        args.dry_run,
        &file.display().to_string(),
    ))
}

/// Finds the `kind: Guest` document named `name` (in `namespace`, or without one, when given)
/// in a YAML stream and sets its `spec.validUntil` to `months` after the later of `today` and
/// the current value. Only that one line changes (or one line is inserted under `spec:`);
/// comments, order and the other documents stay byte for byte. The result is parsed again and
/// must equal the input but for that field, or nothing is returned.
pub fn edit_manifest(
    text: &str,
    name: &str,
    namespace: Option<&str>,
    months: i8,
    today: Date,
) -> Result<FileEdit, ExtendError> {
    let parse = |t: &str| -> Result<Vec<Value>, String> {
        serde_saphyr::from_multiple::<Value>(t)
            .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
            .map_err(|e| e.to_string())
    };
    let all = parse(text).map_err(|e| ExtendError(format!("not valid YAML: {e}")))?;
    let pieces = split_documents(text);
    let mut values = Vec::new();
    for range in &pieces {
        let docs = parse(&text[range.clone()]).unwrap_or_default();
        if docs.len() > 1 {
            return err("cannot tell the documents of this stream apart; edit it by hand");
        }
        values.push(docs.into_iter().next());
    }
    if values.iter().flatten().ne(all.iter()) {
        return err("cannot tell the documents of this stream apart; edit it by hand");
    }
    let matches: Vec<usize> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.as_ref().map(|v| (i, v)))
        .filter(|(_, v)| is_guest(v, name, namespace))
        .map(|(i, _)| i)
        .collect();
    let where_ = namespace.map_or(String::new(), |ns| format!(" in namespace {ns}"));
    let index = match matches.as_slice() {
        [] => return err(format!("no Guest {name:?}{where_} in this file")),
        [i] => *i,
        many => {
            let namespaces: Vec<&str> = many
                .iter()
                .filter_map(|i| values[*i].as_ref())
                .map(|v| v["metadata"]["namespace"].as_str().unwrap_or("(none)"))
                .collect();
            return err(format!(
                "Guest {name:?}{where_} is ambiguous: {} documents match (namespaces: {}); give -n",
                many.len(),
                namespaces.join(", ")
            ));
        }
    };
    let Some(doc) = values[index].as_ref() else {
        return err(format!("no Guest {name:?}{where_} in this file"));
    };
    let old = match &doc["spec"]["validUntil"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => return err(format!("spec.validUntil is not a string: {other}")),
    };
    let new = extended_valid_until(old.as_deref(), months, today)?;
    let range = pieces[index].clone();
    let edited = set_valid_until(&text[range.clone()], old.is_some(), &new.to_string())?;
    let result = format!("{}{}{}", &text[..range.start], edited, &text[range.end..]);
    // The edit must change exactly that one field.
    let mut expected = all.clone();
    let pos = values[..index].iter().flatten().count();
    if let Some(target) = expected.get_mut(pos) {
        target["spec"]["validUntil"] = json!(new.to_string());
    }
    if parse(&result).ok() != Some(expected) {
        return err("could not edit spec.validUntil safely (unusual YAML layout); edit it by hand");
    }
    Ok(FileEdit {
        namespace: doc["metadata"]["namespace"]
            .as_str()
            .map(str::to_string)
            .or_else(|| namespace.map(str::to_string)),
        old,
        new,
        text: result,
    })
}

fn is_guest(v: &Value, name: &str, namespace: Option<&str>) -> bool {
    v["kind"].as_str() == Some("Guest")
        && v["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("roster.io/"))
        && v["metadata"]["name"].as_str() == Some(name)
        && match (namespace, v["metadata"]["namespace"].as_str()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
}

/// Byte ranges of the documents of a YAML stream: the text between `---` / `...` marker lines
/// (a `--- content` line starts its document after the marker).
fn split_documents(text: &str) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| {
            content == m
                || content
                    .strip_prefix(m)
                    .is_some_and(|r| r.starts_with([' ', '\t']))
        };
        if marker("---") || marker("...") {
            pieces.push(start..offset);
            start = if content.len() > 3 {
                offset + 3
            } else {
                offset + line.len()
            };
        }
        offset += line.len();
    }
    pieces.push(start..text.len());
    pieces
}

/// A line split into indentation, content and line ending.
struct Line<'a> {
    /// Byte offset in the document.
    at: usize,
    indent: usize,
    content: &'a str,
    eol: &'a str,
}

impl Line<'_> {
    /// Blank or only a comment.
    fn is_filler(&self) -> bool {
        let c = self.content.trim();
        c.is_empty() || c.starts_with('#')
    }
}

fn lines(doc: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut at = 0;
    for raw in doc.split_inclusive('\n') {
        let body = raw.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start_matches(' ').len();
        out.push(Line {
            at,
            indent,
            content: &body[indent..],
            eol: &raw[body.len()..],
        });
        at += raw.len();
    }
    out
}

/// If `content` is `key:` (plain or quoted key), what follows the colon.
fn after_key<'a>(content: &'a str, key: &str) -> Option<&'a str> {
    for quoted in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(rest) = content.strip_prefix(quoted.as_str()) {
            let rest = rest.trim_start_matches([' ', '\t']);
            if let Some(value) = rest.strip_prefix(':')
                && (value.is_empty() || value.starts_with([' ', '\t']))
            {
                return Some(value);
            }
        }
    }
    None
}

/// Where a scalar value stands on its line and the quote character around it, if any.
type Scalar = (Range<usize>, Option<char>);

/// The byte range (within `value`, the text after `key:`) of a single-line scalar and its
/// quote character, or `None` when there is no value on the line.
fn scalar_span(value: &str) -> Result<Option<Scalar>, ExtendError> {
    let start = value.len() - value.trim_start_matches([' ', '\t']).len();
    let v = &value[start..];
    if v.is_empty() || v.starts_with('#') {
        return Ok(None);
    }
    let multi = || ExtendError("spec.validUntil spans lines; edit it by hand".into());
    match v.chars().next() {
        Some(q @ '"') => {
            let mut escaped = false;
            for (i, c) in v.char_indices().skip(1) {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => return Ok(Some((start..start + i + 1, Some(q)))),
                    _ => {}
                }
            }
            Err(multi())
        }
        Some(q @ '\'') => {
            let bytes = v.as_bytes();
            let mut i = 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    return Ok(Some((start..start + i + 1, Some(q))));
                }
                i += 1;
            }
            Err(multi())
        }
        Some('!' | '&' | '*' | '|' | '>' | '{' | '[') => {
            err("spec.validUntil uses a tag, anchor, alias, block or flow value; edit it by hand")
        }
        _ => {
            let end = v.find(" #").or_else(|| v.find("\t#")).unwrap_or(v.len());
            let trimmed = v[..end].trim_end_matches([' ', '\t']).len();
            Ok(Some((start..start + trimmed, None)))
        }
    }
}

/// Sets `spec.validUntil` in one block-style document: replaces the value on its line (keeping
/// its quotes and any comment) or inserts a line after `type:` (else right after `spec:`).
fn set_valid_until(doc: &str, has_value: bool, new: &str) -> Result<String, ExtendError> {
    let lines = lines(doc);
    let Some(spec) = lines
        .iter()
        .position(|l| l.indent == 0 && after_key(l.content, "spec").is_some())
    else {
        return err(
            "no block-style `spec:` key at the top of the Guest's document; edit it by hand",
        );
    };
    let rest = after_key(lines[spec].content, "spec").unwrap_or("").trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        return err("the Guest's spec is not in block style (spec: {...}); edit it by hand");
    }
    let end = lines[spec + 1..]
        .iter()
        .position(|l| l.indent == 0 && !l.is_filler())
        .map_or(lines.len(), |p| spec + 1 + p);
    let body = &lines[spec + 1..end];
    let Some(indent) = body.iter().find(|l| !l.is_filler()).map(|l| l.indent) else {
        return err("the Guest's spec is empty");
    };
    if indent == 0 {
        return err("the Guest's spec is empty");
    }
    // Whether the key on body[i] continues on the next lines (a multi-line value).
    let continues = |i: usize| {
        body[i + 1..]
            .iter()
            .find(|l| !l.is_filler())
            .is_some_and(|l| l.indent > indent)
    };
    let eol = if lines[spec].eol.is_empty() {
        "\n"
    } else {
        lines[spec].eol
    };
    let found = body
        .iter()
        .position(|l| l.indent == indent && after_key(l.content, "validUntil").is_some());
    let mut out = String::with_capacity(doc.len() + 32);
    match found {
        Some(i) => {
            let line = &body[i];
            let value = after_key(line.content, "validUntil").unwrap_or("");
            let value_at = line.at + line.indent + (line.content.len() - value.len());
            match scalar_span(value)? {
                Some((span, quote)) => {
                    let old = &value[span.clone()];
                    let is_null = quote.is_none() && matches!(old, "~" | "null" | "Null" | "NULL");
                    if is_null == has_value || continues(i) {
                        return err(
                            "could not find spec.validUntil's value on its line; edit it by hand",
                        );
                    }
                    let replacement = match quote {
                        Some(q) => format!("{q}{new}{q}"),
                        None if is_null => format!("\"{new}\""),
                        None => new.to_string(),
                    };
                    out.push_str(&doc[..value_at + span.start]);
                    out.push_str(&replacement);
                    out.push_str(&doc[value_at + span.end..]);
                }
                None => {
                    if has_value || continues(i) {
                        return err("spec.validUntil spans lines; edit it by hand");
                    }
                    // `validUntil:` with no value (null): the value goes right after the colon.
                    out.push_str(&doc[..value_at]);
                    out.push_str(&format!(" \"{new}\""));
                    out.push_str(&doc[value_at..]);
                }
            }
        }
        None if has_value => {
            return err("could not find the spec.validUntil line; edit it by hand");
        }
        None => {
            let after = body
                .iter()
                .enumerate()
                .find(|(i, l)| {
                    l.indent == indent && after_key(l.content, "type").is_some() && !continues(*i)
                })
                .map_or(&lines[spec], |(_, l)| l);
            let insert_at = after.at + after.indent + after.content.len() + after.eol.len();
            let new_line = format!("{}validUntil: \"{new}\"", " ".repeat(indent));
            out.push_str(&doc[..insert_at]);
            if after.eol.is_empty() {
                out.push_str(eol);
                out.push_str(&new_line);
            } else {
                out.push_str(&new_line);
                out.push_str(eol);
            }
            out.push_str(&doc[insert_at..]);
        }
    }
    Ok(out)
}

/// Replaces `path` (the file a symlink points to, if it is one) with `text`: a temporary file
/// in the same directory with the same permissions, synced, then renamed over it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.roster-{}.tmp", std::process::id()));
    let permissions = std::fs::metadata(&target)?.permissions();
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(permissions)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

// ---------------------------------------------------------------------------------------------
// Cluster mode

/// The JSON merge patch that sets `validUntil`, guarded by `resourceVersion` (a concurrent
/// change makes the API server answer 409 Conflict).
pub fn merge_patch(resource_version: &str, valid_until: Date) -> Value {
    json!({
        "metadata": {"resourceVersion": resource_version},
        "spec": {"validUntil": valid_until.to_string()},
    })
}

async fn extend_in_cluster(args: &ExtendArgs) -> Result<String, ExtendError> {
    let months = parse_months(&args.months)?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| ExtendError(format!("cannot connect to the cluster (KUBECONFIG): {e}")))?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let name = &args.name;
    let api: Api<Guest> = Api::namespaced(client, &ns);
    let guest = match api.get(name).await {
        Ok(g) => g,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return err(format!("guest {ns}/{name} not found"));
        }
        Err(e) => return err(format!("cannot read guest {ns}/{name}: {e}")),
    };
    let old = guest.spec.valid_until.clone();
    let today = today_utc(args);
    let new = extended_valid_until(old.as_deref(), months, today)?;
    let accepted = guest
        .status
        .as_ref()
        .and_then(|s| s.accepted_valid_until.as_deref())
        .and_then(|a| valid_until_date(a).ok());
    let limit_base = accepted.map_or(today, |a| a.max(today));
    if let Ok(limit) = limit_base.checked_add(jiff::Span::new().months(12))
        && new > limit
    {
        eprintln!(
            "warning: guest {ns}/{name}: {new} is more than 12 months after {limit_base} (the later of today and the accepted validUntil); the controller will not accept it"
        );
    }
    let Some(rv) = args
        .resource_version
        .clone()
        .or_else(|| guest.metadata.resource_version.clone())
    else {
        return err(format!(
            "guest {ns}/{name} has no resourceVersion; cannot update it safely"
        ));
    };
    if !args.dry_run {
        let patch = merge_patch(&rv, new);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return err(format!(
                    "guest {ns}/{name} was changed by someone else since resourceVersion {rv} (409 Conflict); nothing was written — run the command again"
                ));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return err(format!("guest {ns}/{name} was deleted meanwhile"));
            }
            Err(kube::Error::Api(s)) => {
                return err(format!(
                    "the API server refused validUntil {new} for guest {ns}/{name}: {} ({})",
                    s.message, s.code
                ));
            }
            Err(e) => return err(format!("cannot update guest {ns}/{name}: {e}")),
        }
    }
    Ok(report(
        Some(&ns),
        name,
        old.as_deref(),
        new,
        args.dry_run,
        "the cluster",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn months_are_the_offered_steps() {
        for n in MONTH_STEPS {
            assert_eq!(parse_months(&n.to_string()), Ok(n));
        }
        for bad in ["0", "2", "13", "-1", "x", "", "1.5", "24"] {
            assert!(parse_months(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_base_is_the_later_of_today_and_validity() {
        let today = d("2026-03-15");
        assert_eq!(extended_valid_until(None, 3, today), Ok(d("2026-06-15")));
        assert_eq!(
            extended_valid_until(Some("2025-01-01"), 1, today),
            Ok(d("2026-04-15"))
        );
        assert_eq!(
            extended_valid_until(Some("2026-05-31"), 9, today),
            Ok(d("2027-02-28"))
        );
        assert_eq!(
            extended_valid_until(Some("2026-12-31T23:30:00-02:00"), 12, today),
            Ok(d("2028-01-01"))
        );
        assert_eq!(
            extended_valid_until(Some("2026-08-01T00:00:00Z"), 6, today),
            Ok(d("2027-02-01"))
        );
        assert!(extended_valid_until(Some("soon"), 1, today).is_err());
    }

    const STREAM: &str = "# guests of the physics institute\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: physics}\n---\napiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata:\n  name: ada\n  namespace: physics\nspec:\n  host: bob   # the sponsor\n  type: Personal\n  validUntil: '2026-04-01'  # visit ends\n  person: {givenName: Ada, familyName: Lovelace}\n  account:\n    username: ada\n---\napiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {name: svc, namespace: physics}\nspec:\n    type: Technical\n    adminGroup: it\n    host: bob\n    person: {givenName: Svc, familyName: Svc}\n    account: {username: svc}\n# trailing comment\n";

    #[test]
    fn replaces_the_value_keeping_quotes_and_comments() {
        let e = edit_manifest(STREAM, "ada", None, 3, d("2026-03-15")).unwrap();
        assert_eq!(e.old.as_deref(), Some("2026-04-01"));
        assert_eq!(e.new, d("2026-07-01"));
        assert_eq!(e.namespace.as_deref(), Some("physics"));
        assert_eq!(
            e.text,
            STREAM.replace(
                "  validUntil: '2026-04-01'  # visit ends",
                "  validUntil: '2026-07-01'  # visit ends"
            )
        );
    }

    #[test]
    fn inserts_after_type_with_the_spec_indentation() {
        let e = edit_manifest(STREAM, "svc", Some("physics"), 12, d("2026-03-15")).unwrap();
        assert_eq!(e.old, None);
        assert_eq!(
            e.text,
            STREAM.replace(
                "    type: Technical\n",
                "    type: Technical\n    validUntil: \"2027-03-15\"\n"
            )
        );
    }

    #[test]
    fn plain_null_crlf_and_no_final_newline() {
        let doc = "apiVersion: roster.io/v1alpha1\r\nkind: Guest\r\nmetadata: {name: a}\r\nspec:\r\n  validUntil: 2026-01-31\r\n  host: h\r\n  type: Personal\r\n  person: {givenName: A, familyName: B}\r\n  account: {username: a}";
        let e = edit_manifest(doc, "a", None, 1, d("2025-12-01")).unwrap();
        assert_eq!(e.text, doc.replace("2026-01-31", "2026-02-28"));
        let null = doc.replace("validUntil: 2026-01-31", "validUntil: ~ # later");
        let e = edit_manifest(&null, "a", None, 1, d("2025-12-01")).unwrap();
        assert_eq!(
            e.text,
            doc.replace(
                "validUntil: 2026-01-31",
                "validUntil: \"2026-01-01\" # later"
            )
        );
        let bare = doc.replace("validUntil: 2026-01-31", "validUntil:");
        let e = edit_manifest(&bare, "a", None, 1, d("2025-12-01")).unwrap();
        assert!(e.text.contains("validUntil: \"2026-01-01\"\r\n"));
        let last = "apiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {name: a}\nspec:\n  host: h\n  adminGroup: g\n  person: {givenName: A, familyName: B}\n  account: {username: a}\n  type: Technical";
        let e = edit_manifest(last, "a", None, 1, d("2025-12-01")).unwrap();
        assert_eq!(e.text, format!("{last}\n  validUntil: \"2026-01-01\""));
    }

    #[test]
    fn refuses_what_it_cannot_edit_safely() {
        let today = d("2026-03-15");
        assert_eq!(
            edit_manifest(STREAM, "nobody", None, 1, today),
            Err(ExtendError("no Guest \"nobody\" in this file".into()))
        );
        assert!(edit_manifest(STREAM, "ada", Some("chemistry"), 1, today).is_err());
        let twice = format!(
            "{STREAM}---\n{}",
            STREAM.replace("namespace: physics", "namespace: chemistry")
        );
        let e = edit_manifest(&twice, "ada", None, 1, today).unwrap_err();
        assert!(e.0.contains("ambiguous"), "{e}");
        assert!(edit_manifest(&twice, "ada", Some("chemistry"), 1, today).is_ok());
        let flow = "apiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {name: a}\nspec: {host: h, type: Technical, adminGroup: g, person: {givenName: A, familyName: B}, account: {username: a}}\n";
        assert!(
            edit_manifest(flow, "a", None, 1, today)
                .unwrap_err()
                .0
                .contains("block style")
        );
        let folded = "apiVersion: roster.io/v1alpha1\nkind: Guest\nmetadata: {name: a}\nspec:\n  validUntil:\n    2026-01-01\n  host: h\n";
        assert!(edit_manifest(folded, "a", None, 1, today).is_err());
        assert!(
            edit_manifest("a: [", "a", None, 1, today)
                .unwrap_err()
                .0
                .starts_with("not valid YAML")
        );
    }

    #[test]
    fn the_merge_patch_carries_the_resource_version() {
        assert_eq!(
            merge_patch("42", d("2026-06-30")),
            json!({"metadata": {"resourceVersion": "42"}, "spec": {"validUntil": "2026-06-30"}})
        );
    }
}
