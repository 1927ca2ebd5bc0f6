//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! This mirrors kube-apiserver's custom-resource table convertor
//! (`apiextensions-apiserver/pkg/registry/customresource/tableconvertor`):
//!
//! - the columns are a CRD version's `additionalPrinterColumns`, always preceded by `Name`
//!   (type `string`, format `name`); a version without printer columns gets `Name` and `Age`
//!   ([`columns_from_crd_version`]);
//! - each cell is the first result of the column's JSONPath, converted by column type:
//!   `integer` → integer (floats truncated), `number` → float, `boolean` → bool, `date` → a
//!   human age such as `5m` or `3d4h` computed from an RFC 3339 timestamp (`<invalid>` if it
//!   does not parse, `<unknown>` if empty), `string` → the value printed as Go's `fmt.Print`
//!   prints it (so numbers become text and an explicit `null` becomes `<no value>`); a missing
//!   value, a type mismatch or a JSONPath evaluation error gives a `null` cell (kubectl prints
//!   `<none>`);
//! - each row carries the object's metadata as a `PartialObjectMetadata` (kubectl's default
//!   `includeObject=Metadata`).
//!
//! The JSONPath dialect is the subset of `k8s.io/client-go/util/jsonpath` printer columns use:
//! `.a.b`, `['key']`, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`, `..a` and filters
//! `[?(@.type=="Ready")]` with `==`, `!=`, `<`, `<=`, `>`, `>=` or existence (`[?(@.x)]`),
//! comparing with double- or single-quoted strings, integers, floats, booleans or another `@`
//! path; comparing values of different kinds is an error, as in kubectl. Unions (`[a,b]`) and
//! the `range`/`end` template keywords are not supported. Missing keys are not errors.
//!
//! Ages use the exact rules of `k8s.io/apimachinery/pkg/util/duration.HumanDuration`; the
//! current time is a parameter so results are deterministic.

use serde_json::{Map, Value, json};

/// One column of a table, as declared by a CRD's `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub type_: String,
    pub format: Option<String>,
    pub description: String,
    pub priority: i32,
    /// A JSONPath such as `.status.phase`, without the `{}` template braces.
    pub json_path: String,
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The columns kube-apiserver serves for one entry of a CRD's `spec.versions`: `Name`, then
/// the version's `additionalPrinterColumns` in order, or `Name` and `Age` when it has none.
///
/// A column without `description` gets the server's default
/// `Custom resource definition column (in JSONPath format): <jsonPath>`. A CRD column that is
/// itself called `Name` does not replace the built-in one: the real server shows both.
pub fn columns_from_crd_version(version: &Value) -> Vec<Column> {
    let mut columns = vec![Column {
        name: "Name".into(),
        type_: "string".into(),
        format: Some("name".into()),
        description: NAME_DESCRIPTION.into(),
        priority: 0,
        json_path: ".metadata.name".into(),
    }];
    let declared = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if declared.is_empty() {
        columns.push(Column {
            name: "Age".into(),
            type_: "date".into(),
            format: None,
            description: CREATION_TIMESTAMP_DESCRIPTION.into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        });
        return columns;
    }
    for col in declared {
        let text = |key: &str| col.get(key).and_then(Value::as_str).map(str::to_string);
        let json_path = text("jsonPath").unwrap_or_default();
        let description = text("description")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| {
                format!("Custom resource definition column (in JSONPath format): {json_path}")
            });
        columns.push(Column {
            name: text("name").unwrap_or_default(),
            type_: text("type").unwrap_or_default(),
            format: text("format").filter(|f| !f.is_empty()),
            description,
            priority: col
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            json_path,
        });
    }
    columns
}

/// Builds a `meta.k8s.io/v1` `Table` of `objects` (full custom resources, in list order).
///
/// `list_meta` becomes the table's `metadata` (typically `{"resourceVersion": …}` plus
/// `continue` / `remainingItemCount` when paging). `now_unix_seconds` is the current time used
/// for `date` columns.
pub fn table(
    columns: &[Column],
    objects: &[Value],
    list_meta: &Value,
    now_unix_seconds: i64,
) -> Value {
    let column_definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format.clone().unwrap_or_default(),
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let paths: Vec<Result<Vec<Step>, String>> = columns
        .iter()
        .map(|c| parse_json_path(&c.json_path))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let cells: Vec<Value> = columns
                .iter()
                .zip(&paths)
                .map(|(column, path)| cell(column, path, obj, now_unix_seconds))
                .collect();
            let metadata = obj
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| Value::Object(Map::new()));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

fn cell(column: &Column, path: &Result<Vec<Step>, String>, obj: &Value, now: i64) -> Value {
    // The built-in Name column is the object's name ("" when unset), not a JSONPath lookup.
    if column.format.as_deref() == Some("name") && column.json_path == ".metadata.name" {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str);
        return Value::String(name.unwrap_or("").to_string());
    }
    let Ok(steps) = path else {
        return Value::Null;
    };
    let Ok(results) = evaluate(steps, vec![obj]) else {
        return Value::Null;
    };
    let Some(value) = results.first() else {
        return Value::Null;
    };
    if column.type_ == "string" {
        return Value::String(match value {
            Value::Null => "<no value>".to_string(),
            v => go_print(v),
        });
    }
    match (column.type_.as_str(), value) {
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => n.as_f64().map_or(Value::Null, |f| Value::from(f as i64)),
        },
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("date", Value::String(s)) => Value::String(human_age(s, now)),
        _ => Value::Null,
    }
}

/// `date` cells: `<unknown>` for an empty (or `"null"`) timestamp or Go's zero time,
/// `<invalid>` when it does not parse, otherwise the age at `now`.
fn human_age(timestamp: &str, now_unix_seconds: i64) -> String {
    if timestamp.is_empty() || timestamp == "null" {
        return "<unknown>".into();
    }
    let Some((secs, nanos)) = parse_rfc3339(timestamp) else {
        return "<invalid>".into();
    };
    // Go's zero time.Time, 0001-01-01T00:00:00Z.
    if secs == -62_135_596_800 && nanos == 0 {
        return "<unknown>".into();
    }
    let since = i128::from(now_unix_seconds) * 1_000_000_000
        - (i128::from(secs) * 1_000_000_000 + i128::from(nanos));
    // time.Since saturates at the limits of time.Duration.
    let since = since.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    human_duration(since)
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration` of a duration in nanoseconds.
pub fn human_duration(nanos: i64) -> String {
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into Unix seconds and nanoseconds, with
/// the checks of Go's `time.Parse(time.RFC3339, …)` (ranges, days per month, no leap second).
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &b[range];
        if part.iter().all(u8::is_ascii_digit) {
            Some(
                part.iter()
                    .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
            )
        } else {
            None
        }
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in rest[1..=digits].iter().enumerate() {
            if i < 9 {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
            }
        }
        rest = &rest[1 + digits..];
    }
    let offset = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let oh = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let om = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((
        days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    ))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Text of a value as Go's `fmt.Print` writes the decoded JSON (`map[k:v]`, `[a b]`, `<nil>`).
fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(u)) => u.to_string(),
            _ => go_float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_print).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
    }
}

/// Go's `%v` for a float64: `strconv.FormatFloat(f, 'g', -1, 64)`, i.e. the shortest exact
/// digits, in exponent form (`1e+06`) when the decimal exponent is < -4 or >= 6.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let text = if exp < 0 {
        format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            format!("{digits}{}", "0".repeat(int_len - digits.len()))
        } else {
            format!("{}.{}", &digits[..int_len], &digits[int_len..])
        }
    };
    format!("{sign}{text}")
}

// ---- JSONPath ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Wildcard,
    Recursive,
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Step>,
    /// `None` for an existence filter.
    comparison: Option<(CmpOp, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Vec<Step>),
}

/// Evaluates a printer-column JSONPath against `obj` and returns every result in order
/// (an empty list when nothing matches); the error describes an unparsable path or an
/// evaluation error such as indexing a non-array or comparing values of different kinds.
pub fn evaluate_json_path(path: &str, obj: &Value) -> Result<Vec<Value>, String> {
    let steps = parse_json_path(path)?;
    Ok(evaluate(&steps, vec![obj])?.into_iter().cloned().collect())
}

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
    )
}

fn parse_json_path(path: &str) -> Result<Vec<Step>, String> {
    let mut text = path.trim();
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        text = inner.trim();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            ' ' | '\t' | '$' | '@' => i += 1,
            '.' if chars.get(i + 1) == Some(&'.') => {
                if steps.last() == Some(&Step::Recursive) {
                    return Err("invalid multiple recursive descent".into());
                }
                steps.push(Step::Recursive);
                i += 1; // the second '.' starts the field that follows
            }
            '.' => {
                i += 1;
                let mut name = String::new();
                while i < chars.len() && !is_terminator(chars[i]) {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                match name.as_str() {
                    "" => {}
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(name)),
                }
            }
            '[' if chars[i..].starts_with(&['[', '?', '(']) => {
                let (filter, next) = parse_filter(&chars, i + 3)?;
                steps.push(Step::Filter(Box::new(filter)));
                i = next;
            }
            '[' => {
                let (content, next) = bracket_content(&chars, i + 1)?;
                steps.push(parse_bracket(content.trim())?);
                i = next;
            }
            c => {
                return Err(format!(
                    "unrecognized character in JSONPath {path:?}: {c:?}"
                ));
            }
        }
    }
    Ok(steps)
}

/// The text up to the closing `]` (quotes respected) and the position after it.
fn bracket_content(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut quote: Option<char> = None;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(_) if c == '\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ']' => return Ok((chars[start..i].iter().collect(), i + 1)),
            None => {}
        }
        i += 1;
    }
    Err("unterminated array".into())
}

fn parse_bracket(content: &str) -> Result<Step, String> {
    if content == "*" {
        return Ok(Step::Wildcard);
    }
    if content.len() >= 2
        && ((content.starts_with('\'') && content.ends_with('\''))
            || (content.starts_with('"') && content.ends_with('"')))
    {
        return Ok(Step::Field(unquote(content)?));
    }
    if content.contains(',') {
        return Err(format!("unions are not supported: [{content}]"));
    }
    let parse = |s: &str| -> Result<Option<i64>, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse::<i64>()
                .map(Some)
                .map_err(|_| format!("invalid array index {content}"))
        }
    };
    let parts: Vec<&str> = content.split(':').collect();
    match parts.as_slice() {
        [single] => parse(single)?
            .map(Step::Index)
            .ok_or_else(|| format!("invalid array index {content}")),
        // a third part is Go's slice capacity, which does not change the result
        [start, end] | [start, end, _] => Ok(Step::Slice(parse(start)?, parse(end)?)),
        _ => Err(format!("invalid array index {content}")),
    }
}

/// Parses `…)]` after `[?(`; returns the filter and the position after `]`.
fn parse_filter(chars: &[char], start: usize) -> Result<(Filter, usize), String> {
    let mut quote: Option<char> = None;
    let mut i = start;
    let end = loop {
        let Some(&c) = chars.get(i) else {
            return Err("unterminated filter".into());
        };
        match quote {
            Some(_) if c == '\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ')' => break i,
            None => {}
        }
        i += 1;
    };
    if chars.get(end + 1) != Some(&']') {
        return Err("unclosed array expect ]".into());
    }
    let text: String = chars[start..end].iter().collect();
    // As client-go: the left side runs up to the first of `!<>=`, the operator is the run of
    // those characters, the right side is the rest.
    let filter = match text.find(['!', '<', '>', '=']) {
        Some(op_start) if op_start > 0 => {
            let op_len = text[op_start..]
                .find(|c: char| !matches!(c, '!' | '<' | '>' | '='))
                .unwrap_or(text.len() - op_start);
            let (left, op, right) = (
                &text[..op_start],
                &text[op_start..op_start + op_len],
                &text[op_start + op_len..],
            );
            if right.is_empty() {
                return Err(format!("invalid filter {text:?}"));
            }
            let op = match op {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                other => return Err(format!("unrecognized filter operator {other}")),
            };
            Filter {
                left: parse_json_path(left)?,
                comparison: Some((op, parse_operand(right.trim())?)),
            }
        }
        _ => Filter {
            left: parse_json_path(&text)?,
            comparison: None,
        },
    };
    Ok((filter, end + 2))
}

fn parse_operand(text: &str) -> Result<Operand, String> {
    if text.starts_with('"') || text.starts_with('\'') {
        return Ok(Operand::Literal(Value::String(unquote(text)?)));
    }
    match text {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        _ => {}
    }
    if text.starts_with(['+', '-']) || text.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Operand::Literal(Value::from(i)));
        }
        if let Ok(f) = text.parse::<f64>() {
            return Ok(Operand::Literal(Value::from(f)));
        }
        return Err(format!("cannot parse number {text}"));
    }
    Ok(Operand::Path(parse_json_path(text)?))
}

/// Removes matching single or double quotes and resolves backslash escapes.
fn unquote(text: &str) -> Result<String, String> {
    let quote = text.chars().next().unwrap_or('"');
    let inner = text
        .strip_prefix(quote)
        .and_then(|t| t.strip_suffix(quote))
        .filter(|_| text.len() >= 2)
        .ok_or_else(|| format!("unterminated quoted string {text}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('\\' | '\'' | '"')) => out.push(c),
            other => {
                return Err(format!(
                    "invalid escape in {text}: \\{}",
                    other.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(out)
}

fn evaluate<'v>(steps: &[Step], input: Vec<&'v Value>) -> Result<Vec<&'v Value>, String> {
    let mut current = input;
    for step in steps {
        current = eval_step(step, current)?;
    }
    Ok(current)
}

fn eval_step<'v>(step: &Step, input: Vec<&'v Value>) -> Result<Vec<&'v Value>, String> {
    let mut out = Vec::new();
    match step {
        Step::Field(name) => {
            for v in input {
                if let Some(found) = v.as_object().and_then(|m| m.get(name)) {
                    out.push(found);
                }
            }
        }
        Step::Index(index) => {
            for v in input {
                if v.is_null() {
                    continue;
                }
                let items = v.as_array().ok_or("value is not an array")?;
                let len = items.len() as i64;
                let i = if *index < 0 { index + len } else { *index };
                if i < 0 || i >= len {
                    return Err(format!(
                        "array index out of bounds: index {index}, length {len}"
                    ));
                }
                out.push(&items[i as usize]);
            }
        }
        Step::Slice(start, end) => {
            for v in input {
                if v.is_null() {
                    continue;
                }
                let items = v.as_array().ok_or("value is not an array")?;
                let len = items.len() as i64;
                let norm = |x: i64| if x < 0 { x + len } else { x };
                let s = norm(start.unwrap_or(0));
                let e = norm(end.unwrap_or(len));
                if s != e && (s < 0 || s >= len || e > len || e < s) {
                    return Err(format!(
                        "array slice out of bounds: [{s}:{e}], length {len}"
                    ));
                }
                if s < e {
                    out.extend(&items[s as usize..e as usize]);
                }
            }
        }
        Step::Wildcard => {
            for v in input {
                match v {
                    Value::Object(m) => out.extend(m.values()),
                    Value::Array(a) => out.extend(a.iter()),
                    _ => {}
                }
            }
        }
        Step::Recursive => {
            fn descend<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
                let children: Vec<&Value> = match v {
                    Value::Object(m) => m.values().collect(),
                    Value::Array(a) => a.iter().collect(),
                    _ => Vec::new(),
                };
                if !children.is_empty() {
                    out.push(v);
                    for c in children {
                        descend(c, out);
                    }
                }
            }
            for v in input {
                descend(v, &mut out);
            }
        }
        Step::Filter(filter) => {
            for v in input {
                let items = v
                    .as_array()
                    .ok_or("value is not an array and cannot be filtered")?;
                for item in items {
                    if filter_passes(filter, item)? {
                        out.push(item);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn filter_passes(filter: &Filter, item: &Value) -> Result<bool, String> {
    let lefts = evaluate(&filter.left, vec![item]);
    let Some((op, operand)) = &filter.comparison else {
        return Ok(lefts.is_ok_and(|l| !l.is_empty()));
    };
    let lefts = lefts?;
    let [left] = lefts.as_slice() else {
        return Err("can only compare one element at a time".into());
    };
    let right = match operand {
        Operand::Literal(v) => v,
        Operand::Path(steps) => {
            let rights = evaluate(steps, vec![item])?;
            let [right] = rights.as_slice() else {
                return Err("can only compare one element at a time".into());
            };
            *right
        }
    };
    compare(*op, left, right)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a str),
}

fn scalar(v: &Value) -> Result<Scalar<'_>, String> {
    match v {
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::String(s) => Ok(Scalar::Str(s)),
        Value::Number(n) => Ok(if let Some(i) = n.as_i64() {
            Scalar::Int(i)
        } else if let Some(u) = n.as_u64() {
            Scalar::Uint(u)
        } else {
            Scalar::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        _ => Err("invalid type for comparison".into()),
    }
}

/// Go text/template's `eq`/`lt` rules: same basic kind only (signed and unsigned integers mix).
fn compare(op: CmpOp, left: &Value, right: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    let (l, r) = (scalar(left)?, scalar(right)?);
    let ordering: Option<Ordering> = match (l, r) {
        (Scalar::Int(a), Scalar::Int(b)) => Some(a.cmp(&b)),
        (Scalar::Uint(a), Scalar::Uint(b)) => Some(a.cmp(&b)),
        (Scalar::Int(a), Scalar::Uint(b)) => Some(i128::from(a).cmp(&i128::from(b))),
        (Scalar::Uint(a), Scalar::Int(b)) => Some(i128::from(a).cmp(&i128::from(b))),
        (Scalar::Float(a), Scalar::Float(b)) => a.partial_cmp(&b),
        (Scalar::Str(a), Scalar::Str(b)) => Some(a.cmp(b)),
        (Scalar::Bool(a), Scalar::Bool(b)) => {
            return match op {
                CmpOp::Eq => Ok(a == b),
                CmpOp::Ne => Ok(a != b),
                _ => Err("invalid type for comparison".into()),
            };
        }
        _ => return Err("incompatible types for comparison".into()),
    };
    // NaN never occurs in JSON; treat an unordered pair as unequal.
    let Some(ord) = ordering else {
        return Ok(op == CmpOp::Ne);
    };
    Ok(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn account_crd_version() -> Value {
        // crds/accounts.roster.io.yaml, spec.versions[0], as JSON
        json!({
            "name": "v1alpha1",
            "served": true,
            "storage": true,
            "additionalPrinterColumns": [
                {"jsonPath": ".spec.username", "name": "Username", "type": "string"},
                {"jsonPath": ".status.uidNumber", "name": "UID", "type": "integer"},
                {"jsonPath": ".spec.person", "name": "Person", "type": "string"},
                {"jsonPath": ".status.phase", "name": "Phase", "type": "string"},
                {"jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "name": "Ready", "type": "string"},
                {"jsonPath": ".status.nextTransition.action", "name": "Next", "priority": 1, "type": "string"},
                {"jsonPath": ".status.nextTransition.at", "name": "At", "priority": 1, "type": "date"},
                {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"}
            ]
        })
    }

    fn account(name: &str, created: &str) -> Value {
        json!({
            "apiVersion": "roster.io/v1alpha1",
            "kind": "Account",
            "metadata": {"name": name, "namespace": "site", "resourceVersion": "12", "creationTimestamp": created, "uid": "u-1"},
            "spec": {"username": name, "person": "p-alice"},
            "status": {
                "uidNumber": 10001,
                "phase": "Active",
                "conditions": [
                    {"type": "LdapSynced", "status": "True"},
                    {"type": "Ready", "status": "False"}
                ],
                "nextTransition": {"action": "Expire", "at": "2026-01-08T00:00:00Z"}
            }
        })
    }

    #[test]
    fn columns_from_the_account_crd() {
        let cols = columns_from_crd_version(&account_crd_version());
        let summary: Vec<(&str, &str, Option<&str>, i32, &str)> = cols
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.type_.as_str(),
                    c.format.as_deref(),
                    c.priority,
                    c.json_path.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Name", "string", Some("name"), 0, ".metadata.name"),
                ("Username", "string", None, 0, ".spec.username"),
                ("UID", "integer", None, 0, ".status.uidNumber"),
                ("Person", "string", None, 0, ".spec.person"),
                ("Phase", "string", None, 0, ".status.phase"),
                (
                    "Ready",
                    "string",
                    None,
                    0,
                    ".status.conditions[?(@.type==\"Ready\")].status"
                ),
                ("Next", "string", None, 1, ".status.nextTransition.action"),
                ("At", "date", None, 1, ".status.nextTransition.at"),
                ("Age", "date", None, 0, ".metadata.creationTimestamp"),
            ]
        );
        assert!(
            cols[0]
                .description
                .starts_with("Name must be unique within a namespace.")
        );
        assert_eq!(
            cols[1].description,
            "Custom resource definition column (in JSONPath format): .spec.username"
        );
    }

    #[test]
    fn columns_keep_given_description_and_format_and_duplicate_name() {
        let version = json!({"additionalPrinterColumns": [
            {"jsonPath": ".spec.displayName", "name": "Name", "type": "string", "description": "Display name", "format": "byte", "priority": 2}
        ]});
        let cols = columns_from_crd_version(&version);
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0].json_path, ".metadata.name");
        assert_eq!(
            cols[1],
            Column {
                name: "Name".into(),
                type_: "string".into(),
                format: Some("byte".into()),
                description: "Display name".into(),
                priority: 2,
                json_path: ".spec.displayName".into(),
            }
        );
    }

    #[test]
    fn columns_default_to_name_and_age() {
        for version in [
            json!({"name": "v1"}),
            json!({"additionalPrinterColumns": []}),
        ] {
            let cols = columns_from_crd_version(&version);
            let names: Vec<(&str, &str, &str)> = cols
                .iter()
                .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
                .collect();
            assert_eq!(
                names,
                vec![
                    ("Name", "string", ".metadata.name"),
                    ("Age", "date", ".metadata.creationTimestamp")
                ]
            );
            assert!(
                cols[1]
                    .description
                    .starts_with("CreationTimestamp is a timestamp")
            );
        }
    }

    #[test]
    fn account_table_matches_kube_apiserver_shape() {
        let cols = columns_from_crd_version(&account_crd_version());
        let objects = vec![
            account("alice", "2025-12-31T23:55:00Z"),
            json!({
                "apiVersion": "roster.io/v1alpha1", "kind": "Account",
                "metadata": {"name": "bob", "namespace": "site", "creationTimestamp": "2025-12-29T00:00:00Z"},
                "spec": {"username": "bob", "person": "p-bob"}
            }),
        ];
        let t = table(&cols, &objects, &json!({"resourceVersion": "42"}), NOW);
        assert_eq!(
            t,
            json!({
                "kind": "Table",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "42"},
                "columnDefinitions": [
                    {"name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0},
                    {"name": "Username", "type": "string", "format": "", "description": "Custom resource definition column (in JSONPath format): .spec.username", "priority": 0},
                    {"name": "UID", "type": "integer", "format": "", "description": "Custom resource definition column (in JSONPath format): .status.uidNumber", "priority": 0},
                    {"name": "Person", "type": "string", "format": "", "description": "Custom resource definition column (in JSONPath format): .spec.person", "priority": 0},
                    {"name": "Phase", "type": "string", "format": "", "description": "Custom resource definition column (in JSONPath format): .status.phase", "priority": 0},
                    {"name": "Ready", "type": "string", "format": "", "description": "Custom resource definition column (in JSONPath format): .status.conditions[?(@.type==\"Ready\")].status", "priority": 0},
                    {"name": "Next", "type": "string", "format": "", "description": "Custom resource definition column (in JSONPath format): .status.nextTransition.action", "priority": 1},
                    {"name": "At", "type": "date", "format": "", "description": "Custom resource definition column (in JSONPath format): .status.nextTransition.at", "priority": 1},
                    {"name": "Age", "type": "date", "format": "", "description": "Custom resource definition column (in JSONPath format): .metadata.creationTimestamp", "priority": 0}
                ],
                "rows": [
                    {
                        "cells": ["alice", "alice", 10001, "p-alice", "Active", "False", "Expire", "<invalid>", "5m"],
                        "object": {
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": {"name": "alice", "namespace": "site", "resourceVersion": "12", "creationTimestamp": "2025-12-31T23:55:00Z", "uid": "u-1"}
                        }
                    },
                    {
                        "cells": ["bob", "bob", null, "p-bob", null, null, null, null, "3d"],
                        "object": {
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": {"name": "bob", "namespace": "site", "creationTimestamp": "2025-12-29T00:00:00Z"}
                        }
                    }
                ]
            })
        );
    }

    #[test]
    fn empty_list_has_empty_rows() {
        let cols = columns_from_crd_version(&json!({}));
        let t = table(
            &cols,
            &[],
            &json!({"resourceVersion": "1", "continue": "c"}),
            NOW,
        );
        assert_eq!(t["rows"], json!([]));
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "1", "continue": "c"})
        );
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 2);
    }

    fn col(type_: &str, path: &str) -> Column {
        Column {
            name: "C".into(),
            type_: type_.into(),
            format: None,
            description: String::new(),
            priority: 0,
            json_path: path.into(),
        }
    }

    fn one_cell(type_: &str, path: &str, obj: &Value) -> Value {
        table(
            &[col(type_, path)],
            std::slice::from_ref(obj),
            &json!({}),
            NOW,
        )["rows"][0]["cells"][0]
            .clone()
    }

    #[test]
    fn cells_are_converted_by_column_type() {
        let obj = json!({
            "i": 7, "f": 2.9, "neg": -2.9, "s": "text", "b": true, "n": null,
            "o": {"b": 2, "a": "x", "c": [1, null]}, "l": ["a", 1.5], "big": 1.0e21, "small": 0.00001, "e6": 1000000.0
        });
        let cases = [
            ("integer", ".i", json!(7)),
            ("integer", ".f", json!(2)),
            ("integer", ".neg", json!(-2)),
            ("integer", ".s", Value::Null),
            ("integer", ".n", Value::Null),
            ("number", ".i", json!(7.0)),
            ("number", ".f", json!(2.9)),
            ("number", ".s", Value::Null),
            ("boolean", ".b", json!(true)),
            ("boolean", ".s", Value::Null),
            ("string", ".s", json!("text")),
            ("string", ".i", json!("7")),
            ("string", ".f", json!("2.9")),
            ("string", ".b", json!("true")),
            ("string", ".n", json!("<no value>")),
            ("string", ".missing", Value::Null),
            ("string", ".o", json!("map[a:x b:2 c:[1 <nil>]]")),
            ("string", ".l", json!("[a 1.5]")),
            ("string", ".big", json!("1e+21")),
            ("string", ".small", json!("1e-05")),
            ("string", ".e6", json!("1e+06")),
            ("date", ".i", Value::Null),
            ("date", ".n", Value::Null),
            ("unknown-type", ".s", Value::Null),
            ("string", "not a path", Value::Null),
        ];
        for (type_, path, expected) in cases {
            assert_eq!(one_cell(type_, path, &obj), expected, "{type_} {path}");
        }
    }

    #[test]
    fn go_float_formatting() {
        let cases = [
            (0.0, "0"),
            (1.5, "1.5"),
            (-1.5, "-1.5"),
            (100.0, "100"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.0, "123456"),
            (999999.5, "999999.5"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (123456789.0, "1.23456789e+08"),
            (1e20, "1e+20"),
            (1e21, "1e+21"),
            (1.25e100, "1.25e+100"),
            (-3.5e-7, "-3.5e-07"),
        ];
        for (f, expected) in cases {
            assert_eq!(go_float(f), expected, "{f}");
        }
    }

    #[test]
    fn date_cells() {
        let cases = [
            ("2025-12-31T23:59:59Z", "1s"),
            ("2026-01-01T00:00:00Z", "0s"),
            ("2026-01-01T00:00:01Z", "0s"),
            ("2026-01-01T00:00:01.5Z", "0s"),
            ("2026-01-01T00:00:02Z", "<invalid>"),
            ("2025-12-31T23:55:00Z", "5m"),
            ("2025-12-31T23:54:30Z", "5m30s"),
            ("2025-12-31T23:58:00.999999999Z", "119s"),
            ("2025-12-31T23:55:00.25+00:00", "4m59s"),
            ("2026-01-01T01:00:00+01:00", "0s"),
            ("2025-12-31T18:00:00-05:00", "60m"),
            ("2025-12-31T15:55:00-05:00", "3h5m"),
            ("2025-12-29T00:00:00Z", "3d"),
            ("2024-01-01T00:00:00Z", "2y1d"), // 2024 is a leap year: 731 days
            ("", "<unknown>"),
            ("null", "<unknown>"),
            ("0001-01-01T00:00:00Z", "<unknown>"),
            ("2025-12-31", "<invalid>"),
            ("2025-12-31 23:00:00Z", "<invalid>"),
            ("2025-02-29T00:00:00Z", "<invalid>"),
            ("2025-12-31T24:00:00Z", "<invalid>"),
            ("2025-12-31T23:59:60Z", "<invalid>"),
            ("2025-12-31T23:00:00.Z", "<invalid>"),
            ("2025-12-31T23:00:00+1:00", "<invalid>"),
            ("2025-12-31T23:00:00z", "<invalid>"),
            ("yesterday", "<invalid>"),
        ];
        for (ts, expected) in cases {
            let obj = json!({"t": ts});
            assert_eq!(one_cell("date", ".t", &obj), json!(expected), "{ts}");
        }
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_rfc3339("2026-01-01T00:00:00Z"), Some((NOW, 0)));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123Z"),
            Some((1_709_208_000, 123_000_000))
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59.000000001Z"),
            Some((-1, 1))
        );
        assert_eq!(parse_rfc3339("2026-01-01T05:30:00+05:30"), Some((NOW, 0)));
        assert_eq!(
            parse_rfc3339("2000-01-01T00:00:00.1234567891Z"),
            Some((946_684_800, 123_456_789))
        );
        assert_eq!(parse_rfc3339("2100-02-29T00:00:00Z"), None);
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z").map(|t| t.0),
            Some(951_782_400)
        );
    }

    #[test]
    fn human_duration_follows_apimachinery() {
        const S: i64 = 1_000_000_000;
        const M: i64 = 60 * S;
        const H: i64 = 60 * M;
        const D: i64 = 24 * H;
        let cases = [
            (-2 * S, "<invalid>"),
            (-S - S / 2, "0s"),
            (-S, "0s"),
            (-1, "0s"),
            (0, "0s"),
            (S - 1, "0s"),
            (S, "1s"),
            (119 * S, "119s"),
            (2 * M, "2m"),
            (2 * M + S, "2m1s"),
            (9 * M + 59 * S, "9m59s"),
            (10 * M, "10m"),
            (10 * M + 59 * S, "10m"),
            (179 * M, "179m"),
            (3 * H, "3h"),
            (3 * H + 5 * M, "3h5m"),
            (7 * H + 59 * M, "7h59m"),
            (8 * H, "8h"),
            (47 * H + 59 * M, "47h"),
            (48 * H, "2d"),
            (49 * H, "2d1h"),
            (7 * D + 23 * H, "7d23h"),
            (8 * D, "8d"),
            (729 * D, "729d"),
            (730 * D, "2y"),
            (731 * D, "2y1d"),
            (8 * 365 * D - D, "7y364d"),
            (8 * 365 * D, "8y"),
            (100 * 365 * D, "100y"),
        ];
        for (nanos, expected) in cases {
            assert_eq!(human_duration(nanos), expected, "{nanos}ns");
        }
    }

    // ---- JSONPath ---------------------------------------------------------------------------

    fn conditions_obj() -> Value {
        json!({
            "metadata": {"name": "x", "labels": {"roster.io/source": "hr", "a.b": "dots"}},
            "spec": {"items": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}]},
            "status": {"conditions": [
                {"type": "LdapSynced", "status": "True", "observedGeneration": 3},
                {"type": "Ready", "status": "False", "observedGeneration": 2},
                {"type": "Ready", "status": "Unknown"}
            ]}
        })
    }

    fn eval(path: &str) -> Result<Vec<Value>, String> {
        evaluate_json_path(path, &conditions_obj())
    }

    #[test]
    fn jsonpath_fields_indices_and_slices() {
        assert_eq!(eval(".metadata.name").unwrap(), vec![json!("x")]);
        assert_eq!(eval("{.metadata.name}").unwrap(), vec![json!("x")]);
        assert_eq!(eval("$.metadata.name").unwrap(), vec![json!("x")]);
        assert_eq!(eval(".spec.items[0].name").unwrap(), vec![json!("a")]);
        assert_eq!(eval(".spec.items[-1].name").unwrap(), vec![json!("c")]);
        assert_eq!(
            eval(".spec.items[1:].name").unwrap(),
            vec![json!("b"), json!("c")]
        );
        assert_eq!(eval(".spec.items[:2].n").unwrap(), vec![json!(1), json!(2)]);
        assert_eq!(
            eval(".spec.items[*].n").unwrap(),
            vec![json!(1), json!(2), json!(3)]
        );
        assert_eq!(eval(".spec.items[1:1]").unwrap(), Vec::<Value>::new());
        assert_eq!(
            eval(".metadata.labels['roster.io/source']").unwrap(),
            vec![json!("hr")]
        );
        assert_eq!(
            eval(".metadata.labels[\"a.b\"]").unwrap(),
            vec![json!("dots")]
        );
        assert_eq!(eval(r".metadata.labels.a\.b").unwrap(), vec![json!("dots")]);
        assert_eq!(
            eval(".metadata.labels.*").unwrap(),
            vec![json!("dots"), json!("hr")]
        );
        assert_eq!(
            eval("..observedGeneration").unwrap(),
            vec![json!(3), json!(2)]
        );
        // missing keys are not errors
        assert_eq!(eval(".status.nothing.deeper").unwrap(), Vec::<Value>::new());
        assert_eq!(eval(".status.nothing[0]").unwrap(), Vec::<Value>::new());
        // errors
        assert!(eval(".spec.items[3]").is_err());
        assert!(eval(".metadata.name[0]").is_err());
        assert!(eval(".spec.items[a]").is_err());
        assert!(eval(".spec.items[0,1]").is_err());
        assert!(eval(".spec.items[0").is_err());
        assert!(eval("spec").is_err());
    }

    #[test]
    fn jsonpath_filters() {
        assert_eq!(
            eval(".status.conditions[?(@.type==\"Ready\")].status").unwrap(),
            vec![json!("False"), json!("Unknown")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type=='LdapSynced')].status").unwrap(),
            vec![json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[?( @.type != \"Ready\" )].type").unwrap(),
            vec![json!("LdapSynced")]
        );
        assert_eq!(
            eval(".spec.items[?(@.n>1)].name").unwrap(),
            vec![json!("b"), json!("c")]
        );
        assert_eq!(
            eval(".spec.items[?(@.n<=2)].name").unwrap(),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            eval(".spec.items[?(@.name>='b')].n").unwrap(),
            vec![json!(2), json!(3)]
        );
        assert_eq!(eval(".spec.items[?(@.n==@.n)].name").unwrap().len(), 3);
        assert_eq!(
            eval(".status.conditions[?(@.observedGeneration)].type").unwrap(),
            vec![json!("LdapSynced"), json!("Ready")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type==\"Gone\")].status").unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(
            eval(".status.missing[?(@.type==\"Ready\")]").unwrap(),
            Vec::<Value>::new()
        );
        // as kubectl: an element lacking the compared field, or a kind mismatch, is an error
        assert!(eval(".status.conditions[?(@.observedGeneration==2)].type").is_err());
        assert!(eval(".spec.items[?(@.n==\"1\")]").is_err());
        assert!(eval(".spec.items[?(@.n==1.0)]").is_err());
        assert!(eval(".metadata[?(@.x==1)]").is_err());
        assert!(eval(".spec.items[?(@.n=~1)]").is_err());
        assert!(eval(".spec.items[?(@.n==1]").is_err());
        let bools = json!({"l": [{"ok": true, "v": "a"}, {"ok": false, "v": "b"}]});
        assert_eq!(
            evaluate_json_path(".l[?(@.ok==true)].v", &bools).unwrap(),
            vec![json!("a")]
        );
        assert!(evaluate_json_path(".l[?(@.ok<true)].v", &bools).is_err());
    }

    #[test]
    fn ready_column_takes_the_first_match_and_errors_are_null() {
        let cols = [col(
            "string",
            ".status.conditions[?(@.type==\"Ready\")].status",
        )];
        let with_gap = json!({"status": {"conditions": [{"status": "True"}, {"type": "Ready", "status": "True"}]}});
        let objects = [
            conditions_obj(),
            with_gap,
            json!({"status": {"conditions": null}}),
        ];
        let t = table(&cols, &objects, &json!({}), NOW);
        let cells: Vec<Value> = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["cells"][0].clone())
            .collect();
        assert_eq!(cells, vec![json!("False"), Value::Null, Value::Null]);
    }

    #[test]
    fn name_cell_is_the_object_name_even_when_missing() {
        let cols = columns_from_crd_version(&json!({}));
        let t = table(
            &cols,
            &[json!({"metadata": {}}), json!({})],
            &json!({}),
            NOW,
        );
        assert_eq!(t["rows"][0]["cells"], json!(["", Value::Null]));
        assert_eq!(t["rows"][1]["cells"], json!(["", Value::Null]));
        assert_eq!(t["rows"][1]["object"]["metadata"], json!({}));
    }
}
