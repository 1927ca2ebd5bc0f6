//! Label and field selectors (`?labelSelector=` and `?fieldSelector=`) as kube-apiserver parses
//! and evaluates them for custom resources.
//!
//! [`LabelSelector`] follows `k8s.io/apimachinery/pkg/labels`: a comma-separated list of
//! requirements, all of which must hold —
//!
//! | syntax | meaning |
//! | --- | --- |
//! | `k=v`, `k==v` | label `k` present with value `v` |
//! | `k!=v` | label `k` absent, or present with another value |
//! | `k in (a,b)` | label `k` present with value `a` or `b` |
//! | `k notin (a,b)` | label `k` absent, or present with a value other than `a` and `b` |
//! | `k` | label `k` present |
//! | `!k` | label `k` absent |
//! | `k>5`, `k<5` | label `k` present with an integer value greater / less than 5 |
//!
//! Whitespace (space, tab, CR, LF) is allowed around every token; keys may carry a DNS-subdomain
//! prefix (`roster.io/source`); values may be empty (`k=`, `k in ()`, `k in (a,)`); keys and
//! values are validated like the real server (qualified names of at most 63 characters,
//! values of at most 63). The empty selector selects everything.
//!
//! [`FieldSelector`] follows `k8s.io/apimachinery/pkg/fields` with the field set the real server
//! offers for custom resources without `selectableFields`: `metadata.name` and
//! `metadata.namespace`, with `=`, `==` and `!=`, comma-separated; values may escape `\,`, `\=`
//! and `\\`. Any other field is rejected with `field label not supported: <field>`.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A parsed label selector; see the module documentation for the grammar.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: LabelOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    /// `=` and `==`
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

impl LabelSelector {
    /// Parses a selector as kube-apiserver does; the error text resembles the real server's.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        let requirements = parser.parse()?;
        Ok(LabelSelector { requirements })
    }

    /// True when the selector has no requirements (selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a label set satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `/metadata/labels` satisfy every requirement (missing labels are an
    /// empty set; non-string label values are ignored).
    pub fn matches_value(&self, obj: &Value) -> bool {
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            LabelOp::Equals(v) => value == Some(v),
            LabelOp::NotEquals(v) => value != Some(v),
            LabelOp::In(set) => value.is_some_and(|v| set.contains(v)),
            LabelOp::NotIn(set) => value.is_none_or(|v| !set.contains(v)),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelOp::LessThan(n) => value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    GreaterThan,
    LessThan,
    OpenPar,
    ClosePar,
    Comma,
    End,
}

impl Token {
    /// The literal text, for error messages.
    fn literal(&self) -> &str {
        match self {
            Token::Identifier(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Bang => "!",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::OpenPar => "(",
            Token::ClosePar => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }

    /// In value position, the keywords `in` and `notin` are plain identifiers.
    fn as_value(&self) -> Token {
        match self {
            Token::In | Token::NotIn => Token::Identifier(self.literal().to_string()),
            other => other.clone(),
        }
    }
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_whitespace(c) {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (token, len) = match (c, next) {
                ('=', Some('=')) => (Token::DoubleEquals, 2),
                ('!', Some('=')) => (Token::NotEquals, 2),
                ('=', _) => (Token::Equals, 1),
                ('!', _) => (Token::Bang, 1),
                ('(', _) => (Token::OpenPar, 1),
                (')', _) => (Token::ClosePar, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::GreaterThan, 1),
                (_, _) => (Token::LessThan, 1),
            };
            tokens.push(token);
            i += len;
            continue;
        }
        let start = i;
        while i < chars.len() && !is_whitespace(chars[i]) && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        });
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_value(&self) -> Token {
        self.tokens[self.pos].as_value()
    }

    fn next_raw(&mut self) -> Token {
        let t = self.tokens[self.pos].clone();
        if t != Token::End {
            self.pos += 1;
        }
        t
    }

    fn next_value(&mut self) -> Token {
        self.next_raw().as_value()
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek_value() {
                Token::Identifier(_) | Token::Bang => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    match self.next_value() {
                        Token::End => return Ok(requirements),
                        Token::Comma => match self.peek_value() {
                            Token::Identifier(_) | Token::Bang => {}
                            t => {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.literal()
                                ));
                            }
                        },
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.literal()
                            ));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.literal()
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let mut token = self.next_value();
        let negated = token == Token::Bang;
        if negated {
            token = self.next_value();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        validate_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                op: LabelOp::DoesNotExist,
            });
        }
        if matches!(self.peek_value(), Token::End | Token::Comma) {
            return Ok(Requirement {
                key,
                op: LabelOp::Exists,
            });
        }
        let op = match self.next_raw() {
            Token::In => LabelOp::In(self.parse_set()?),
            Token::NotIn => LabelOp::NotIn(self.parse_set()?),
            Token::Equals | Token::DoubleEquals => LabelOp::Equals(self.parse_exact_value()?),
            Token::NotEquals => LabelOp::NotEquals(self.parse_exact_value()?),
            Token::GreaterThan => LabelOp::GreaterThan(integer_value(&self.parse_exact_value()?)?),
            Token::LessThan => LabelOp::LessThan(integer_value(&self.parse_exact_value()?)?),
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.literal()
                ));
            }
        };
        match &op {
            LabelOp::Equals(v) | LabelOp::NotEquals(v) => validate_value(v)?,
            LabelOp::In(set) | LabelOp::NotIn(set) => {
                set.iter().try_for_each(|v| validate_value(v))?;
            }
            _ => {}
        }
        Ok(Requirement { key, op })
    }

    fn parse_exact_value(&mut self) -> Result<String, String> {
        match self.peek_value() {
            Token::End | Token::Comma => return Ok(String::new()),
            _ => {}
        }
        match self.next_value() {
            Token::Identifier(v) => Ok(v),
            t => Err(format!("found '{}', expected: identifier", t.literal())),
        }
    }

    /// `( … )`, with the real parser's treatment of empty entries: `()`, `(,a)`, `(a,)` and
    /// `(a,,b)` contain the empty value, `(a,,)` is an error.
    fn parse_set(&mut self) -> Result<BTreeSet<String>, String> {
        let t = self.next_value();
        if t != Token::OpenPar {
            return Err(format!("found '{}', expected: '('", t.literal()));
        }
        let mut set = BTreeSet::new();
        match self.peek_value() {
            Token::ClosePar => {
                self.next_value();
                set.insert(String::new());
                return Ok(set);
            }
            Token::Identifier(_) | Token::Comma => {}
            t => {
                return Err(format!(
                    "found '{}', expected: ',', ')' or identifier",
                    t.literal()
                ));
            }
        }
        loop {
            match self.next_value() {
                Token::Identifier(v) => {
                    set.insert(v);
                    match self.peek_value() {
                        Token::Comma => {}
                        Token::ClosePar => break,
                        t => {
                            return Err(format!("found '{}', expected: ',' or ')'", t.literal()));
                        }
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek_value() {
                        Token::ClosePar => {
                            set.insert(String::new());
                            break;
                        }
                        Token::Comma => {
                            self.next_value();
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        t.literal()
                    ));
                }
            }
        }
        self.next_value(); // the ')' seen above
        Ok(set)
    }
}

fn integer_value(v: &str) -> Result<i64, String> {
    let n = v.parse::<i64>().map_err(|_| {
        format!("for 'Gt', 'Lt' operators, the value must be an integer, not \"{v}\"")
    })?;
    // the value must also be a valid label value, so negative numbers are rejected
    validate_value(v)?;
    Ok(n)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters (empty not allowed here).
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 subdomain: lowercase alphanumeric labels separated by dots, `-` inside labels,
/// at most 253 characters.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if name.contains('/') {
            return Err(format!(
                "invalid label key \"{key}\": a qualified name must consist of an optional DNS subdomain prefix and '/' and a name"
            ));
        }
        if !is_dns1123_subdomain(prefix) {
            return Err(format!(
                "invalid label key \"{key}\": prefix part must be a lowercase RFC 1123 subdomain of at most 253 characters"
            ));
        }
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "invalid label key \"{key}\": name part must be at most 63 characters, consist of alphanumeric characters, '-', '_' or '.', and start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value: \"{value}\": a valid label value must be an empty string or at most 63 characters of alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        ))
    }
}

/// A parsed field selector over `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    negated: bool,
}

impl FieldSelector {
    /// Parses a field selector; only `metadata.name` and `metadata.namespace` are accepted.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in split_terms(s) {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let value = unescape_value(raw)?;
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                value,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    /// True when the selector has no terms (selects everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether an object satisfies every term; a missing name or namespace reads as `""`.
    pub fn matches_value(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let pointer = match t.field.as_str() {
                "metadata.name" => "/metadata/name",
                _ => "/metadata/namespace",
            };
            let actual = obj.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            (actual == t.value) != t.negated
        })
    }
}

/// Splits on commas not preceded by a backslash escape.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// The first position where `!=`, `==` or `=` occurs (tried in that order at each position).
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if rest.starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(format!("invalid field selector: unescaped character: {c}"));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    /// Asserts the selector matches exactly the label sets marked `true`.
    fn check(s: &str, cases: &[(&[(&str, &str)], bool)]) {
        let selector = sel(s);
        for (set, expected) in cases {
            assert_eq!(
                selector.matches(&labels(set)),
                *expected,
                "selector {s:?} on {set:?}"
            );
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        for s in ["", "   ", "\t\n"] {
            let selector = sel(s);
            assert!(selector.is_empty());
            assert!(selector.matches(&labels(&[])));
            assert!(selector.matches(&labels(&[("a", "b")])));
        }
    }

    #[test]
    fn equality() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("app", "web")], true),
            (&[("app", "web"), ("x", "y")], true),
            (&[("app", "db")], false),
            (&[], false),
        ];
        check("app=web", cases);
        check("app==web", cases);
        check("  app  ==  web  ", cases);
    }

    #[test]
    fn inequality_matches_missing_key() {
        check(
            "app!=web",
            &[
                (&[("app", "web")], false),
                (&[("app", "db")], true),
                (&[], true),
            ],
        );
    }

    #[test]
    fn empty_values() {
        check(
            "k=",
            &[(&[("k", "")], true), (&[("k", "v")], false), (&[], false)],
        );
        check(
            "k=,a=b",
            &[(&[("k", ""), ("a", "b")], true), (&[("a", "b")], false)],
        );
        check(
            "k!=",
            &[(&[("k", "")], false), (&[("k", "v")], true), (&[], true)],
        );
        check("k in ()", &[(&[("k", "")], true), (&[("k", "v")], false)]);
        check(
            "k in (a,)",
            &[
                (&[("k", "")], true),
                (&[("k", "a")], true),
                (&[("k", "b")], false),
            ],
        );
        check(
            "k in (,a)",
            &[
                (&[("k", "")], true),
                (&[("k", "a")], true),
                (&[("k", "b")], false),
            ],
        );
        check(
            "k in (a,,b)",
            &[
                (&[("k", "")], true),
                (&[("k", "b")], true),
                (&[("k", "c")], false),
            ],
        );
    }

    #[test]
    fn set_based() {
        check(
            "env in (prod, staging)",
            &[
                (&[("env", "prod")], true),
                (&[("env", "staging")], true),
                (&[("env", "dev")], false),
                (&[], false),
            ],
        );
        check(
            "env notin (prod,staging)",
            &[
                (&[("env", "prod")], false),
                (&[("env", "dev")], true),
                (&[], true),
            ],
        );
        check(
            "env in(prod)",
            &[(&[("env", "prod")], true), (&[("env", "dev")], false)],
        );
    }

    #[test]
    fn existence() {
        check(
            "tier",
            &[
                (&[("tier", "")], true),
                (&[("tier", "x")], true),
                (&[], false),
            ],
        );
        check("!tier", &[(&[("tier", "x")], false), (&[], true)]);
        check(
            "! tier",
            &[(&[("tier", "x")], false), (&[("other", "x")], true)],
        );
    }

    #[test]
    fn greater_and_less_than() {
        check(
            "n>5",
            &[
                (&[("n", "6")], true),
                (&[("n", "5")], false),
                (&[("n", "abc")], false),
                (&[], false),
            ],
        );
        check("n < 5", &[(&[("n", "-1")], true), (&[("n", "5")], false)]);
        assert!(
            LabelSelector::parse("n>x")
                .unwrap_err()
                .contains("must be an integer")
        );
        assert!(
            LabelSelector::parse("n>-1")
                .unwrap_err()
                .contains("invalid label value")
        );
        assert!(
            LabelSelector::parse("n>")
                .unwrap_err()
                .contains("must be an integer")
        );
    }

    #[test]
    fn conjunction_and_prefixed_keys() {
        check(
            "roster.io/source=hr, roster.io/managed, !legacy, tier notin (a)",
            &[
                (
                    &[("roster.io/source", "hr"), ("roster.io/managed", "true")],
                    true,
                ),
                (
                    &[
                        ("roster.io/source", "hr"),
                        ("roster.io/managed", "true"),
                        ("legacy", "1"),
                    ],
                    false,
                ),
                (
                    &[
                        ("roster.io/source", "hr"),
                        ("roster.io/managed", "true"),
                        ("tier", "a"),
                    ],
                    false,
                ),
                (&[("roster.io/source", "hr")], false),
                (
                    &[("roster.io/source", "it"), ("roster.io/managed", "")],
                    false,
                ),
            ],
        );
    }

    #[test]
    fn keywords_are_plain_words_in_key_and_value_position() {
        check(
            "in=notin",
            &[(&[("in", "notin")], true), (&[("in", "x")], false)],
        );
        check(
            "k in (in, notin)",
            &[(&[("k", "notin")], true), (&[("k", "x")], false)],
        );
    }

    #[test]
    fn matches_value_reads_metadata_labels() {
        let s = sel("app=web,!legacy");
        assert!(s.matches_value(&json!({"metadata": {"labels": {"app": "web", "n": 1}}})));
        assert!(!s.matches_value(&json!({"metadata": {"labels": {"app": "web", "legacy": "y"}}})));
        assert!(!s.matches_value(&json!({"metadata": {"name": "x"}})));
        assert!(sel("!app").matches_value(&json!({"metadata": {"name": "x"}})));
        // non-string label values are ignored
        assert!(!sel("n").matches_value(&json!({"metadata": {"labels": {"n": 1}}})));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        let cases = [
            (
                "k in a",
                "unable to parse requirement: found 'a', expected: '('",
            ),
            (
                "k in (a",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "k in (a b)",
                "unable to parse requirement: found 'b', expected: ',' or ')'",
            ),
            (
                "k notin",
                "unable to parse requirement: found '', expected: '('",
            ),
            (
                "=v",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            ("k=v=w", "found '=', expected: ',' or 'end of string'"),
            ("k=v,", "found '', expected: identifier after ','"),
            ("k=v,,a", "found ',', expected: identifier after ','"),
            (
                "k v",
                "unable to parse requirement: found 'v', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("!k=v", "found '=', expected: ',' or 'end of string'"),
            (
                "k==(a)",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "(a)",
                "found '(', expected: !, identifier, or 'end of string'",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "k in (a,,)",
                "unable to parse requirement: found ')', expected: ',', or identifier",
            ),
            (
                "k in (a,",
                "unable to parse requirement: found '', expected: ',', or identifier",
            ),
            (
                "k in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            // syntax is checked before values are validated
            (
                "k in (-bad",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
        ];
        for (s, msg) in cases {
            assert_eq!(LabelSelector::parse(s).unwrap_err(), msg, "selector {s:?}");
        }
    }

    #[test]
    fn invalid_keys_and_values_are_errors() {
        for s in [
            "bad_=v",
            "k@y=v",
            "Bad_Key$=v",
            "-lead=v",
            "trail-=v",
            "Roster.io/x=v",
            "/x=v",
            "a/b/c=v",
            "roster.io/=v",
            "k=v$",
            "k in (ok, -bad)",
            "k=-v",
            &format!("{}=v", "a".repeat(64)),
            &format!("k={}", "a".repeat(64)),
        ] {
            let err = LabelSelector::parse(s).unwrap_err();
            assert!(
                err.contains("invalid label key") || err.contains("invalid label value"),
                "selector {s:?}: {err}"
            );
        }
        // at the limits
        sel(&format!("{}={}", "a".repeat(63), "b".repeat(63)));
        sel("a.b_c-d=E.f_G-h");
        sel("sub.domain-1.example/Key_1=v");
    }

    // ---- field selectors ----------------------------------------------------------------------

    fn obj(name: &str, ns: Option<&str>) -> Value {
        match ns {
            Some(ns) => json!({"metadata": {"name": name, "namespace": ns}}),
            None => json!({"metadata": {"name": name}}),
        }
    }

    #[test]
    fn field_selector_name_and_namespace() {
        let s = FieldSelector::parse("metadata.name=alice").unwrap();
        assert!(s.matches_value(&obj("alice", Some("ns"))));
        assert!(!s.matches_value(&obj("bob", Some("ns"))));

        let s =
            FieldSelector::parse("metadata.name==alice,metadata.namespace!=kube-system").unwrap();
        assert!(s.matches_value(&obj("alice", Some("ns"))));
        assert!(!s.matches_value(&obj("alice", Some("kube-system"))));
        assert!(s.matches_value(&obj("alice", None)));
        assert!(!s.matches_value(&obj("bob", None)));

        // cluster-scoped objects have namespace ""
        let s = FieldSelector::parse("metadata.namespace=").unwrap();
        assert!(s.matches_value(&obj("x", None)));
        assert!(!s.matches_value(&obj("x", Some("ns"))));
    }

    #[test]
    fn field_selector_empty_and_escapes() {
        for s in ["", ",", ",,"] {
            let sel = FieldSelector::parse(s).unwrap();
            assert!(sel.is_empty());
            assert!(sel.matches_value(&obj("anything", None)));
        }
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert!(s.matches_value(&obj(r"a,b=c\d", None)));
        assert!(!s.matches_value(&obj("a", None)));
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("spec.x=1").unwrap_err(),
            "field label not supported: spec.x"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=a,status.phase!=Active").unwrap_err(),
            "field label not supported: status.phase"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name").unwrap_err(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        // the value may not contain unescaped '=' and escapes must be known
        assert!(FieldSelector::parse("metadata.name=a=b").is_err());
        assert!(FieldSelector::parse(r"metadata.name=a\n").is_err());
        assert!(FieldSelector::parse(r"metadata.name=a\").is_err());
        // no trimming: the field is "metadata.name "
        assert_eq!(
            FieldSelector::parse("metadata.name = a").unwrap_err(),
            "field label not supported: metadata.name "
        );
    }
}
