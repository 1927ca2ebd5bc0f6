//! Username and e-mail schemes of an ImportSource, in the spirit of the UCS@school import.
//!
//! A scheme is a template such as `<:umlauts><:lower><firstname>[0].<lastname>[COUNTER2]`:
//!
//! - `<field>` inserts a field of the record (after the ImportSource's column mapping). The
//!   value's leading and trailing whitespace is ignored; a field the record lacks, or whose value
//!   is empty, is an error. `firstname` and `givenName` are aliases of each other, and so are
//!   `lastname` and `familyName`. Field names are made of ASCII letters, digits, `_`, `.`, `-`.
//! - `<field>[N]` right after a field takes one character (0-based, negative from the end; out
//!   of range gives nothing), `<field>[A:B]` a slice with Python's rules (either bound optional,
//!   negative from the end). Characters are Unicode scalar values, never bytes.
//! - `<:umlauts>`, `<:lower>`, `<:upper>` (also several at once: `<:umlauts,lower>`) apply to
//!   all text produced after them — fields (after their slice) and literal text. `<:umlauts>` is
//!   [`transliterate`]; `<:lower>`/`<:upper>` replace each other.
//! - `<:strip>`, `<:alpha>`, `<:alphanum>` make values name- and address-safe, and apply to the
//!   *fields* after them only (never to literal text, so a `.` or `@example.org` of the scheme
//!   stays): `strip` removes whitespace (`van der Berg` → `vanderBerg`), `alpha` keeps letters
//!   only (`O'Brien-Smith` → `OBrienSmith`), `alphanum` letters and digits. They run after
//!   `umlauts` (so `Nguyễn` with `umlauts,alpha` is `Nguyen`); `alpha` and `alphanum` exclude
//!   each other.
//! - `<field:umlauts,lower>` applies modifiers to that field only, *before* its slice (so
//!   `<firstname:umlauts>[0]` of `Ömer` is `O`, while `<:umlauts><firstname>[0]` is `Oe`, as in
//!   UCS@school). A field's own case wins over the global one.
//! - `[COUNTER2]` (no number on first use, then 2, 3, …) or `[ALWAYSCOUNTER]` (1, 2, …): at the
//!   very end of a username scheme ([`Template::parse`]); in an e-mail scheme
//!   ([`Template::parse_email`]) at the end of the local part, right before the `@`
//!   (`<firstname>.<lastname>[COUNTER2]@example.org`).
//! - Anything else is literal text and copied. `>`, `]` and a `[` that is neither a counter nor
//!   right after a field are errors, so a typo such as `[COUNTER]` is caught at parse time.
//!
//! Positions in error messages count characters from 1.
//!
//! Everything here is pure: the caller looks up and stores the counters (Roster keeps them in
//! LDAP so generated names stay historically unique) and says which names are taken.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How many candidates [`username`] tries before giving up.
pub const MAX_TRIES: u32 = 10_000;

/// The longest username Roster accepts (see [`crate::api::NAME_PATTERN`]).
pub const MAX_USERNAME_LENGTH: usize = 32;

/// Which counter a scheme has (a username's at its end, an address's before its `@`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// No counter: a taken name is an error.
    None,
    /// `[COUNTER2]`: the bare name first, then `name2`, `name3`, …
    FromSecond,
    /// `[ALWAYSCOUNTER]`: `name1`, `name2`, …
    Always,
}

/// A parsed username or e-mail scheme. See the [module documentation](self) for the syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
    counter: Counter,
    /// Where the counter stands: the number of parts before it (`parts.len()` at the end).
    counter_at: usize,
}

/// One piece of a template, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Text copied as it is (subject to the global modifiers in force).
    Literal(String),
    /// `<:…>`: modifiers for everything after this point.
    Global(Modifiers),
    /// `<name:…>[…]`.
    Field {
        name: String,
        /// 1-based character position of the `<`.
        position: usize,
        modifiers: Modifiers,
        slice: Option<Slice>,
    },
}

/// Modifiers of a field or in force globally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Modifiers {
    umlauts: bool,
    case: Option<Case>,
    /// `strip`: whitespace removed (fields only).
    strip: bool,
    /// `alpha` / `alphanum`: what a field keeps.
    keep: Option<Keep>,
}

/// What `alpha` and `alphanum` keep of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    Letters,
    LettersAndDigits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Lower,
    Upper,
}

/// `[N]` or `[A:B]` after a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slice {
    Index(i64),
    Range(Option<i64>, Option<i64>),
}

/// What is wrong with a scheme, or with what it gives for one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    /// The template has no text at all.
    #[error("the scheme is empty")]
    EmptyTemplate,
    /// A `<` without its `>`.
    #[error("`<` at position {position} is not closed by `>`")]
    UnclosedTag {
        /// Position of the `<`.
        position: usize,
    },
    /// A `[` without its `]`.
    #[error("`[` at position {position} is not closed by `]`")]
    UnclosedBracket {
        /// Position of the `[`.
        position: usize,
    },
    /// A character that only has a meaning as part of a tag or bracket.
    #[error("unexpected `{found}` at position {position}")]
    Unexpected {
        /// The character.
        found: char,
        /// Its position.
        position: usize,
    },
    /// A field name with characters other than ASCII letters, digits, `_`, `.`, `-`.
    #[error(
        "bad field name `{name}` at position {position}: use ASCII letters, digits, '_', '.' or '-'"
    )]
    BadFieldName {
        /// The name as written.
        name: String,
        /// Position of the `<`.
        position: usize,
    },
    /// A modifier other than `umlauts`, `lower`, `upper`, `strip`, `alpha`, `alphanum`.
    #[error(
        "unknown modifier `{modifier}` at position {position} (known: umlauts, lower, upper, strip, alpha, alphanum)"
    )]
    UnknownModifier {
        /// The modifier as written.
        modifier: String,
        /// Position of the `<`.
        position: usize,
    },
    /// `lower` and `upper` (or `alpha` and `alphanum`) in the same tag.
    #[error("`{first}` and `{second}` together at position {position}")]
    ConflictingModifiers {
        /// The first of the two, as written.
        first: &'static str,
        /// The second.
        second: &'static str,
        /// Position of the `<`.
        position: usize,
    },
    /// `[…]` after a field that is neither `[N]` nor `[A:B]` with integers.
    #[error("bad slice `[{text}]` at position {position}: {reason}")]
    BadSlice {
        /// What stood between the brackets.
        text: String,
        /// Position of the `[`.
        position: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `[…]` that is not a counter and does not follow a field.
    #[error(
        "unknown `[{text}]` at position {position}: expected [COUNTER2] or [ALWAYSCOUNTER] at the end, or [N] / [A:B] right after a <field>"
    )]
    UnknownBracket {
        /// What stood between the brackets.
        text: String,
        /// Position of the `[`.
        position: usize,
    },
    /// Something follows `[COUNTER2]`/`[ALWAYSCOUNTER]`.
    #[error("the counter at position {position} must be at the end of the scheme")]
    CounterNotAtEnd {
        /// Position of the counter's `[`.
        position: usize,
    },
    /// An e-mail scheme whose counter is not at the end of the local part.
    #[error(
        "the counter at position {position} must stand right before the '@' (the end of the local part: <firstname>.<lastname>[COUNTER2]@example.org)"
    )]
    CounterNotBeforeAt {
        /// Position of the counter's `[`.
        position: usize,
    },
    /// A second counter.
    #[error("a second counter at position {position}: a scheme has at most one")]
    SecondCounter {
        /// Position of the second counter's `[`.
        position: usize,
    },
    /// `maxLength` of zero.
    #[error("maxLength must be at least 1")]
    BadMaxLength,
    /// The record has no such field (under the name or its alias).
    #[error("unknown field `{field}` at position {position}{}; the record has: {}", alias_note(.field), .known.join(", "))]
    UnknownField {
        /// The field as written in the scheme.
        field: String,
        /// Position of its `<`.
        position: usize,
        /// The fields the record has.
        known: Vec<String>,
    },
    /// The record has the field, but it is empty.
    #[error("field `{field}` (position {position}) is empty in this record")]
    EmptyField {
        /// The field as written in the scheme.
        field: String,
        /// Position of its `<`.
        position: usize,
    },
    /// Nothing is left after removing what a username cannot contain.
    #[error("the scheme gives an empty result for this record (fields used: {})", .fields.join(", "))]
    EmptyResult {
        /// The fields the scheme reads, in order.
        fields: Vec<String>,
    },
    /// The generated name breaks Roster's username rule `^[a-z_][a-z0-9._-]{0,31}$`.
    #[error("generated username `{username}` is invalid: {reason}")]
    InvalidUsername {
        /// The name.
        username: String,
        /// Which part of the rule it breaks.
        reason: String,
    },
    /// The generated address is not `local@domain` in ASCII.
    #[error("generated e-mail address `{email}` is invalid: {reason}")]
    InvalidEmail {
        /// The address.
        email: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The scheme has no counter and its name is taken.
    #[error("username `{username}` is taken and the scheme has no counter")]
    Taken {
        /// The name.
        username: String,
    },
    /// The scheme has no counter and its address is someone else's.
    #[error(
        "e-mail address `{email}` is taken by {holder} and the scheme has no counter (add [COUNTER2] before the '@')"
    )]
    EmailTaken {
        /// The address.
        email: String,
        /// Who has it (an account, or an earlier row).
        holder: String,
    },
    /// No free name within [`MAX_TRIES`] candidates (or the counter overflowed).
    #[error("no free name for `{base}` in {tries} tries starting at counter {start}")]
    CounterExhausted {
        /// The base the counter is added to.
        base: String,
        /// The first counter value tried.
        start: u32,
        /// How many candidates were tried.
        tries: u32,
    },
}

/// The alias a field is also looked up under.
fn alias(field: &str) -> Option<&'static str> {
    match field {
        "firstname" => Some("givenName"),
        "givenName" => Some("firstname"),
        "lastname" => Some("familyName"),
        "familyName" => Some("lastname"),
        _ => None,
    }
}

fn alias_note(field: &str) -> String {
    alias(field)
        .map(|a| format!(" (or `{a}`)"))
        .unwrap_or_default()
}

impl Template {
    /// Parses a scheme (a username's, a recordUID's: a counter only at its very end); errors
    /// name the position (in characters, from 1) of what is wrong.
    pub fn parse(text: &str) -> Result<Template, SchemeError> {
        Template::parse_as(text, false)
    }

    /// Parses an e-mail scheme: a counter stands right before the `@`.
    pub fn parse_email(text: &str) -> Result<Template, SchemeError> {
        Template::parse_as(text, true)
    }

    fn parse_as(text: &str, email: bool) -> Result<Template, SchemeError> {
        let chars: Vec<char> = text.chars().collect();
        if chars.is_empty() {
            return Err(SchemeError::EmptyTemplate);
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut counter = Counter::None;
        let mut counter_position = 0;
        let mut counter_at = 0;
        let mut i = 0;
        while i < chars.len() {
            if counter != Counter::None && !email {
                return Err(SchemeError::CounterNotAtEnd {
                    position: counter_position,
                });
            }
            let position = i + 1;
            match chars[i] {
                '<' => {
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    let close = find_close(&chars, i, '<', '>')
                        .ok_or(SchemeError::UnclosedTag { position })?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    i = close + 1;
                    if let Some(mods) = inner.strip_prefix(':') {
                        parts.push(Part::Global(parse_modifiers(mods, position)?));
                        continue;
                    }
                    let (name, mods) = match inner.split_once(':') {
                        Some((name, mods)) => (name, parse_modifiers(mods, position)?),
                        None => (inner.as_str(), Modifiers::default()),
                    };
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                    {
                        return Err(SchemeError::BadFieldName {
                            name: name.to_string(),
                            position,
                        });
                    }
                    let mut slice = None;
                    if chars.get(i) == Some(&'[') {
                        let close = find_close(&chars, i, '[', ']')
                            .ok_or(SchemeError::UnclosedBracket { position: i + 1 })?;
                        let inner: String = chars[i + 1..close].iter().collect();
                        // A word (`[COUNTER]`) is a mistyped counter rather than a slice.
                        let word = inner.starts_with(|c: char| c.is_alphabetic());
                        if counter_kind(&inner).is_none() && !word {
                            slice = Some(parse_slice(&inner, i + 1)?);
                            i = close + 1;
                        }
                    }
                    parts.push(Part::Field {
                        name: name.to_string(),
                        position,
                        modifiers: mods,
                        slice,
                    });
                }
                '[' => {
                    let close = find_close(&chars, i, '[', ']')
                        .ok_or(SchemeError::UnclosedBracket { position })?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    let kind = counter_kind(&inner).ok_or(SchemeError::UnknownBracket {
                        text: inner,
                        position,
                    })?;
                    if counter != Counter::None {
                        return Err(SchemeError::SecondCounter { position });
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    counter = kind;
                    counter_position = position;
                    counter_at = parts.len();
                    i = close + 1;
                    if email && chars.get(i) != Some(&'@') {
                        return Err(SchemeError::CounterNotBeforeAt { position });
                    }
                }
                found @ ('>' | ']') => return Err(SchemeError::Unexpected { found, position }),
                c => {
                    literal.push(c);
                    i += 1;
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if counter == Counter::None {
            counter_at = parts.len();
        }
        Ok(Template {
            text: text.to_string(),
            parts,
            counter,
            counter_at,
        })
    }

    /// The scheme as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The record fields the scheme reads, in order of first use, as written in the scheme.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let Part::Field { name, .. } = part
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        out
    }

    /// The template's text without any counter applied (the base a counter is added to), or an
    /// error if a field is missing/empty. Nothing is removed or cut here; see [`username_base`].
    pub fn base(&self, fields: &BTreeMap<String, String>) -> Result<String, SchemeError> {
        let (before, after) = self.render(fields)?;
        Ok(before + &after)
    }

    /// The text before the counter's place and after it.
    fn render(&self, fields: &BTreeMap<String, String>) -> Result<(String, String), SchemeError> {
        let mut global = Modifiers::default();
        let mut out = String::new();
        let mut before = None;
        for (at, part) in self.parts.iter().enumerate() {
            if at == self.counter_at {
                before = Some(std::mem::take(&mut out));
            }
            match part {
                Part::Literal(text) => out.push_str(&apply(text, global.for_literal())),
                Part::Global(mods) => {
                    global.umlauts |= mods.umlauts;
                    global.strip |= mods.strip;
                    if mods.case.is_some() {
                        global.case = mods.case;
                    }
                    if mods.keep.is_some() {
                        global.keep = mods.keep;
                    }
                }
                Part::Field {
                    name,
                    position,
                    modifiers,
                    slice,
                } => {
                    let value = lookup(fields, name, *position)?;
                    let own = apply(value, *modifiers);
                    let sliced = match slice {
                        Some(s) => s.apply(&own),
                        None => own,
                    };
                    // The field's own case again after a global `<:umlauts>` (`Ü` → `Ue` → `UE`).
                    let outer = Modifiers {
                        case: modifiers.case.or(global.case),
                        ..global
                    };
                    out.push_str(&apply(&sliced, outer));
                }
            }
        }
        match before {
            Some(before) => Ok((before, out)),
            None => Ok((out, String::new())),
        }
    }

    /// The counter at the end of the scheme.
    pub fn counter(&self) -> Counter {
        self.counter
    }

    fn empty_result(&self) -> SchemeError {
        SchemeError::EmptyResult {
            fields: self.fields().into_iter().map(str::to_string).collect(),
        }
    }
}

/// The index of the `close` matching the `open` at `start`; a second `open` before it counts as
/// unclosed (tags do not nest).
fn find_close(chars: &[char], start: usize, open: char, close: char) -> Option<usize> {
    for (j, &c) in chars.iter().enumerate().skip(start + 1) {
        if c == close {
            return Some(j);
        }
        if c == open {
            return None;
        }
    }
    None
}

fn counter_kind(inner: &str) -> Option<Counter> {
    match inner {
        "COUNTER2" => Some(Counter::FromSecond),
        "ALWAYSCOUNTER" => Some(Counter::Always),
        _ => None,
    }
}

/// `umlauts,lower` → modifiers; `position` is the tag's for errors.
fn parse_modifiers(list: &str, position: usize) -> Result<Modifiers, SchemeError> {
    let mut mods = Modifiers::default();
    let conflict = |first, second| SchemeError::ConflictingModifiers {
        first,
        second,
        position,
    };
    for modifier in list.split(',').map(str::trim) {
        match modifier {
            "umlauts" => mods.umlauts = true,
            "strip" => mods.strip = true,
            "lower" | "upper" => {
                let case = if modifier == "lower" {
                    Case::Lower
                } else {
                    Case::Upper
                };
                if mods.case.is_some_and(|c| c != case) {
                    return Err(conflict("lower", "upper"));
                }
                mods.case = Some(case);
            }
            "alpha" | "alphanum" => {
                let keep = if modifier == "alpha" {
                    Keep::Letters
                } else {
                    Keep::LettersAndDigits
                };
                if mods.keep.is_some_and(|k| k != keep) {
                    return Err(conflict("alpha", "alphanum"));
                }
                mods.keep = Some(keep);
            }
            _ => {
                return Err(SchemeError::UnknownModifier {
                    modifier: modifier.to_string(),
                    position,
                });
            }
        }
    }
    Ok(mods)
}

impl Modifiers {
    /// What applies to literal text: transliteration and case, never the field filters.
    fn for_literal(self) -> Modifiers {
        Modifiers {
            strip: false,
            keep: None,
            ..self
        }
    }
}

/// `N`, `A:B`, `A:`, `:B`, `:` → a slice; `position` is the `[`'s for errors.
fn parse_slice(inner: &str, position: usize) -> Result<Slice, SchemeError> {
    let bad = |reason: &str| SchemeError::BadSlice {
        text: inner.to_string(),
        position,
        reason: reason.to_string(),
    };
    let int = |s: &str| -> Result<i64, SchemeError> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(&format!("`{s}` is not an integer")));
        }
        s.parse()
            .map_err(|_| bad(&format!("`{s}` is out of range")))
    };
    let bound = |s: &str| -> Result<Option<i64>, SchemeError> {
        if s.is_empty() {
            Ok(None)
        } else {
            int(s).map(Some)
        }
    };
    if inner.is_empty() {
        return Err(bad("expected an index [N] or a slice [A:B]"));
    }
    match inner.split_once(':') {
        None => Ok(Slice::Index(int(inner)?)),
        Some((_, end)) if end.contains(':') => Err(bad("a step ([A:B:C]) is not supported")),
        Some((start, end)) => Ok(Slice::Range(bound(start)?, bound(end)?)),
    }
}

impl Slice {
    /// Python's `s[i]` (empty when out of range) or `s[a:b]`, on characters.
    fn apply(self, s: &str) -> String {
        let chars: Vec<char> = s.chars().collect();
        let len = i64::try_from(chars.len()).unwrap_or(i64::MAX);
        let clamp = |i: i64| -> usize {
            let i = if i < 0 { (len + i).max(0) } else { i.min(len) };
            usize::try_from(i).unwrap_or(0)
        };
        match self {
            Slice::Index(i) => {
                let i = if i < 0 { len + i } else { i };
                usize::try_from(i)
                    .ok()
                    .and_then(|i| chars.get(i))
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            }
            Slice::Range(start, end) => {
                let start = clamp(start.unwrap_or(0));
                let end = clamp(end.unwrap_or(len));
                if start >= end {
                    String::new()
                } else {
                    chars[start..end].iter().collect()
                }
            }
        }
    }
}

/// Transliterates (if asked), filters (if asked), then changes case (if asked).
fn apply(text: &str, mods: Modifiers) -> String {
    let mut text = if mods.umlauts {
        transliterate(text)
    } else {
        text.to_string()
    };
    if mods.strip {
        text.retain(|c| !c.is_whitespace());
    }
    match mods.keep {
        Some(Keep::Letters) => text.retain(char::is_alphabetic),
        Some(Keep::LettersAndDigits) => text.retain(char::is_alphanumeric),
        None => {}
    }
    match mods.case {
        Some(Case::Lower) => text.to_lowercase(),
        Some(Case::Upper) => text.to_uppercase(),
        None => text,
    }
}

/// The trimmed value of `name` (or its alias) in the record.
fn lookup<'a>(
    fields: &'a BTreeMap<String, String>,
    name: &str,
    position: usize,
) -> Result<&'a str, SchemeError> {
    let candidates = [Some(name), alias(name)];
    let mut found = false;
    for key in candidates.into_iter().flatten() {
        if let Some(value) = fields.get(key) {
            found = true;
            let value = value.trim();
            if !value.is_empty() {
                return Ok(value);
            }
        }
    }
    if found {
        Err(SchemeError::EmptyField {
            field: name.to_string(),
            position,
        })
    } else {
        Err(SchemeError::UnknownField {
            field: name.to_string(),
            position,
            known: fields.keys().cloned().collect(),
        })
    }
}

/// The `<:umlauts>` mapping: German umlauts become two letters (`ä`→`ae`, `Ö`→`Oe`, `ß`→`ss`),
/// every other precomposed Latin letter its base letter (`é`→`e`, `ễ`→`e`, `ǆ`→`dz`), the letters
/// without a decomposition by convention (`ø`→`o`, `ł`→`l`, `æ`→`ae`, `þ`→`th`), and whatever is
/// still not ASCII is dropped ([`crate::text::to_ascii`]).
pub fn transliterate(s: &str) -> String {
    crate::text::to_ascii(s)
}

/// Checks Roster's username rule `^[a-z_][a-z0-9._-]{0,31}$`, naming what is wrong.
fn check_username(name: &str) -> Result<(), SchemeError> {
    let invalid = |reason: String| SchemeError::InvalidUsername {
        username: name.to_string(),
        reason,
    };
    let len = name.chars().count();
    if len > MAX_USERNAME_LENGTH {
        return Err(invalid(format!(
            "{len} characters, at most {MAX_USERNAME_LENGTH} allowed (a maxLength leaves room for the counter)"
        )));
    }
    let Some(first) = name.chars().next() else {
        return Err(invalid("it is empty".to_string()));
    };
    if let Some(bad) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        let hint = if bad.is_uppercase() {
            " (add <:lower>)"
        } else if !bad.is_ascii() {
            " (add <:umlauts>)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "`{bad}` is not allowed, only a-z, 0-9, '.', '_' and '-'{hint}"
        )));
    }
    if !matches!(first, 'a'..='z' | '_') {
        return Err(invalid(format!(
            "it starts with `{first}`, not a letter a-z or '_'"
        )));
    }
    Ok(())
}

/// The base a username counter is added to: [`Template::base`] without the characters a
/// username cannot contain (anything but letters, digits, `.`, `_`, `-`; letters that are still
/// upper case or not ASCII are kept so that the rule check can name them), cut to `max_length`
/// characters. This is also the key under which the caller stores the counter.
pub fn username_base(
    t: &Template,
    fields: &BTreeMap<String, String>,
    max_length: Option<usize>,
) -> Result<String, SchemeError> {
    if max_length == Some(0) {
        return Err(SchemeError::BadMaxLength);
    }
    let base: String = t
        .base(fields)?
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(max_length.unwrap_or(usize::MAX))
        .collect();
    if base.is_empty() {
        return Err(t.empty_result());
    }
    Ok(base)
}

/// A username for a new record: the base (cut to max_length, username characters only), then
/// with the counter: the first candidate for which `taken` is false, starting from `next` (the
/// counter value stored for this base — Roster keeps these counters in LDAP so generated names
/// are historically unique: a name once given, even to someone since purged, is never generated
/// again). Returns the name and the counter value to store (the number used + 1, or None when
/// no counter was used).
///
/// With [`Counter::FromSecond`] the bare base counts as number 1: taking it returns `Some(2)`,
/// so the bare name is never generated again for this base. `next` of `Some(0)` or `Some(1)`
/// starts at the bare base ([`Counter::FromSecond`]) or at 1 ([`Counter::Always`]). Lower
/// numbers than `next` are never tried, even when free. Every candidate is checked against the
/// username rule; the search gives up after [`MAX_TRIES`] taken candidates.
pub fn username(
    t: &Template,
    fields: &BTreeMap<String, String>,
    max_length: Option<usize>,
    next: Option<u32>,
    taken: &dyn Fn(&str) -> bool,
) -> Result<(String, Option<u32>), SchemeError> {
    let base = username_base(t, fields, max_length)?;
    if t.counter == Counter::None {
        check_username(&base)?;
        if taken(&base) {
            return Err(SchemeError::Taken { username: base });
        }
        return Ok((base.clone(), None));
    }
    numbered(
        t.counter,
        &base,
        next,
        |n| {
            let mut candidate = base.clone();
            if let Some(n) = n {
                let _ = write!(candidate, "{n}");
            }
            check_username(&candidate)?;
            Ok(candidate)
        },
        taken,
    )
}

/// The first candidate `make(number)` that is not `taken`, counting as [`username`] describes
/// (`make(None)` is the bare base). Returns it and the counter's next number.
fn numbered(
    counter: Counter,
    base: &str,
    next: Option<u32>,
    make: impl Fn(Option<u32>) -> Result<String, SchemeError>,
    taken: &dyn Fn(&str) -> bool,
) -> Result<(String, Option<u32>), SchemeError> {
    let start = next.unwrap_or(1).max(1);
    let exhausted = |tries| SchemeError::CounterExhausted {
        base: base.to_string(),
        start,
        tries,
    };
    let mut number = start;
    for tries in 0..MAX_TRIES {
        let shown = (counter == Counter::Always || number > 1).then_some(number);
        let candidate = make(shown)?;
        if !taken(&candidate) {
            let stored = number.checked_add(1).ok_or_else(|| exhausted(tries + 1))?;
            return Ok((candidate, Some(stored)));
        }
        number = number.checked_add(1).ok_or_else(|| exhausted(tries + 1))?;
    }
    Err(exhausted(MAX_TRIES))
}

/// An e-mail address from a scheme without a counter, checked to be `local@domain` in ASCII
/// (the local part a dot-atom of at most 64 characters of letters, digits and `.`, `_`, `-`,
/// `+`; the domain at most 253 characters of labels of letters, digits and inner hyphens).
/// With a counter, see [`email_numbered`]; this gives the bare address (the counter's key).
pub fn email(t: &Template, fields: &BTreeMap<String, String>) -> Result<String, SchemeError> {
    let address = t.base(fields)?;
    if address.is_empty() {
        return Err(t.empty_result());
    }
    check_email(&address)?;
    Ok(address)
}

/// Whether `address` is what the scheme gives this record with some counter value (or none):
/// a person keeps the address they were given while their name gives the same base.
pub fn email_matches(t: &Template, fields: &BTreeMap<String, String>, address: &str) -> bool {
    let Ok((before, after)) = t.render(fields) else {
        return false;
    };
    let lower = address.to_ascii_lowercase();
    let (before, after) = (before.to_ascii_lowercase(), after.to_ascii_lowercase());
    let Some(number) = lower
        .strip_prefix(&before)
        .and_then(|rest| rest.strip_suffix(&after))
    else {
        return false;
    };
    match t.counter {
        Counter::None => number.is_empty(),
        Counter::FromSecond => {
            number.is_empty()
                || (!number.starts_with('0') && number.parse::<u32>().is_ok_and(|n| n >= 2))
        }
        Counter::Always => !number.starts_with('0') && number.parse::<u32>().is_ok_and(|n| n >= 1),
    }
}

/// An e-mail address for a new record: without a counter the address, refused when `taken`
/// (a message naming who has it comes from the caller); with one, the first free candidate
/// counting from `next` as [`username`] does. Returns the address, the counter's next number,
/// and the bare address (the key its counter is stored under).
pub fn email_numbered(
    t: &Template,
    fields: &BTreeMap<String, String>,
    next: Option<u32>,
    taken: &dyn Fn(&str) -> bool,
) -> Result<(String, Option<u32>, String), SchemeError> {
    let (before, after) = t.render(fields)?;
    let bare = before.clone() + &after;
    if bare.is_empty() {
        return Err(t.empty_result());
    }
    if t.counter == Counter::None {
        check_email(&bare)?;
        return Ok((bare.clone(), None, bare));
    }
    check_email(&bare)?;
    let (address, stored) = numbered(
        t.counter,
        &bare,
        next,
        |n| {
            let candidate = match n {
                Some(n) => format!("{before}{n}{after}"),
                None => bare.clone(),
            };
            check_email(&candidate)?;
            Ok(candidate)
        },
        taken,
    )?;
    Ok((address, stored, bare))
}

fn check_email(address: &str) -> Result<(), SchemeError> {
    let invalid = |reason: String| SchemeError::InvalidEmail {
        email: address.to_string(),
        reason,
    };
    if let Some(bad) = address.chars().find(|c| !c.is_ascii_graphic()) {
        let what = if bad.is_whitespace() {
            "whitespace (add :strip or :alpha to the field)".to_string()
        } else if bad.is_ascii() {
            format!("the control character {bad:?}")
        } else {
            format!("`{bad}`, not ASCII (add <:umlauts>)")
        };
        return Err(invalid(format!("it contains {what}")));
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err(invalid("it has no '@'".to_string()));
    };
    if domain.contains('@') {
        return Err(invalid("it has more than one '@'".to_string()));
    }
    if local.is_empty() || local.len() > 64 {
        return Err(invalid(format!(
            "the local part has {} characters, 1 to 64 allowed",
            local.len()
        )));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(invalid(
            "the local part starts or ends with '.' or has '..'".to_string(),
        ));
    }
    // RFC 5322 allows more (`'`, `!`, `#` …), but a generated address is a conventional one:
    // an apostrophe of `O'Brien` in it is a surprise for the person and for many a mail system.
    if let Some(bad) = local
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !"+-_.".contains(*c))
    {
        return Err(invalid(format!(
            "`{bad}` is not allowed in the local part (letters, digits, '.', '_', '-', '+'; add :alpha to the field)"
        )));
    }
    if domain.is_empty() || domain.len() > 253 {
        return Err(invalid(format!(
            "the domain has {} characters, 1 to 253 allowed",
            domain.len()
        )));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(invalid(format!(
                "the domain label `{label}` must be 1 to 63 letters, digits or inner '-'"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ada() -> BTreeMap<String, String> {
        record(&[("givenName", "Ada"), ("familyName", "Lovelace")])
    }

    fn base(template: &str, fields: &BTreeMap<String, String>) -> String {
        Template::parse(template).unwrap().base(fields).unwrap()
    }

    fn parse_err(template: &str) -> SchemeError {
        Template::parse(template).unwrap_err()
    }

    fn never(_: &str) -> bool {
        false
    }

    fn user(
        template: &str,
        fields: &BTreeMap<String, String>,
        max_length: Option<usize>,
        next: Option<u32>,
        taken: &[&str],
    ) -> Result<(String, Option<u32>), SchemeError> {
        let t = Template::parse(template).unwrap();
        username(&t, fields, max_length, next, &|name| taken.contains(&name))
    }

    // --- transliteration ---

    #[test]
    fn transliterate_german_umlauts_become_two_letters() {
        assert_eq!(transliterate("Jürgen Müller"), "Juergen Mueller");
        assert_eq!(transliterate("äöüÄÖÜß"), "aeoeueAeOeUess");
        assert_eq!(transliterate("Straße ẞ"), "Strasse SS");
        assert_eq!(transliterate("Ökonom Übel Ärger"), "Oekonom Uebel Aerger");
    }

    #[test]
    fn transliterate_other_latin_letters_to_their_base_letter() {
        // French
        assert_eq!(
            transliterate("Élodie François Lætitia Œuvre"),
            "Elodie Francois Laetitia Oeuvre"
        );
        assert_eq!(transliterate("àâçèéêëîïôùûÿ"), "aaceeeeiiouuy");
        // Scandinavian and Icelandic
        assert_eq!(
            transliterate("Søren Åse Ærø Þór Guðrún"),
            "Soren Ase Aero Thor Gudrun"
        );
        // Polish
        assert_eq!(
            transliterate("Łukasz Żółć Gęś Źdźbło Ńa"),
            "Lukasz Zolc Ges Zdzblo Na"
        );
        // Czech and Slovak
        assert_eq!(
            transliterate("Dvořák Čapek Šťastný Žďár Ľubo"),
            "Dvorak Capek Stastny Zdar Lubo"
        );
        // Hungarian, Romanian, Turkish, Spanish
        assert_eq!(transliterate("Erdős Győző Műhely"), "Erdos Gyozo Muhely");
        assert_eq!(
            transliterate("Ștefan Țepeș Şahin Iğdır İzmir"),
            "Stefan Tepes Sahin Igdir Izmir"
        );
        assert_eq!(transliterate("Muñoz Peña"), "Munoz Pena");
        // Vietnamese
        assert_eq!(
            transliterate("Nguyễn Thị Phương Đặng"),
            "Nguyen Thi Phuong Dang"
        );
    }

    #[test]
    fn transliterate_latin_extended_additional() {
        assert_eq!(transliterate("Ḁḍṣẁẕ Ṣọ̀lá"), "Adswz Sola");
        assert_eq!(transliterate("\u{1E00}\u{1E95}\u{1EA0}\u{1EF9}"), "AzAy");
        // Whatever comes in, only ASCII comes out.
        let all: String = (0x80..=0x2FFF).filter_map(char::from_u32).collect();
        assert!(transliterate(&all).is_ascii());
    }

    #[test]
    fn transliterate_drops_what_is_not_latin() {
        assert_eq!(transliterate("Иван"), "");
        assert_eq!(transliterate("李 Lee"), " Lee");
        assert_eq!(transliterate("Ada 😀 Lovelace ×÷"), "Ada  Lovelace ");
        assert_eq!(transliterate("O’Brien"), "OBrien");
        assert!(transliterate("Ωmega ğ ħ ł ø ŋ").is_ascii());
    }

    #[test]
    fn transliterate_decomposed_input() {
        // NFD: letters followed by combining marks.
        assert_eq!(transliterate("Mu\u{308}ller"), "Mueller");
        assert_eq!(transliterate("Jose\u{301}"), "Jose");
        assert_eq!(transliterate("A\u{308}rger"), "Aerger");
    }

    #[test]
    fn transliterate_keeps_ascii() {
        let ascii = "Ada Lovelace-Byron O'Brien_1.x@y";
        assert_eq!(transliterate(ascii), ascii);
    }

    // --- fields, slices, modifiers ---

    #[test]
    fn initial_dot_lastname() {
        assert_eq!(
            base("<:lower><firstname>[0].<lastname>", &ada()),
            "a.lovelace"
        );
        let t = Template::parse("<:umlauts><:lower><firstname>[0].<lastname>").unwrap();
        assert_eq!(
            username(&t, &ada(), None, None, &never).unwrap(),
            ("a.lovelace".to_string(), None)
        );
    }

    #[test]
    fn firstname_and_lastname_are_aliases_of_given_and_family_name() {
        let upstream = record(&[("firstname", "Ada"), ("lastname", "Lovelace")]);
        assert_eq!(base("<givenName>/<familyName>", &upstream), "Ada/Lovelace");
        assert_eq!(base("<firstname>/<lastname>", &ada()), "Ada/Lovelace");
        // An empty field falls back to its alias.
        let both = record(&[("firstname", ""), ("givenName", "Ada")]);
        assert_eq!(base("<firstname>", &both), "Ada");
    }

    #[test]
    fn other_fields_and_literal_text() {
        let r = record(&[
            ("recordUID", "E-0042"),
            ("email", "ada@example.org"),
            ("institute", "Physics"),
        ]);
        assert_eq!(base("x<recordUID>-<institute>[:4]", &r), "xE-0042-Phys");
        assert_eq!(base("<email>", &r), "ada@example.org");
        assert_eq!(base("plain", &r), "plain");
    }

    #[test]
    fn field_values_are_trimmed() {
        let r = record(&[("givenName", "  Ada "), ("familyName", "\tLovelace\n")]);
        assert_eq!(base("<firstname>[0]<lastname>[-1]", &r), "Ae");
    }

    #[test]
    fn index_and_slices() {
        let r = record(&[("givenName", "Margaret")]);
        let cases = [
            ("<firstname>[0]", "M"),
            ("<firstname>[1]", "a"),
            ("<firstname>[-1]", "t"),
            ("<firstname>[-8]", "M"),
            ("<firstname>[8]", ""),
            ("<firstname>[-9]", ""),
            ("<firstname>[0:3]", "Mar"),
            ("<firstname>[-2:]", "et"),
            ("<firstname>[:2]", "Ma"),
            ("<firstname>[2:]", "rgaret"),
            ("<firstname>[1:-1]", "argare"),
            ("<firstname>[:]", "Margaret"),
            ("<firstname>[5:2]", ""),
            ("<firstname>[3:100]", "garet"),
            ("<firstname>[-100:2]", "Ma"),
            ("<firstname>[100:]", ""),
        ];
        for (template, want) in cases {
            assert_eq!(base(template, &r), want, "{template}");
        }
    }

    #[test]
    fn slices_count_characters_not_bytes() {
        let r = record(&[
            ("givenName", "Ängström"),
            ("familyName", "Łukasiewicz"),
            ("institute", "李小龍"),
        ]);
        assert_eq!(base("<firstname>[0:3]", &r), "Äng");
        assert_eq!(base("<firstname>[-2:]", &r), "öm");
        assert_eq!(base("<firstname>[0]", &r), "Ä");
        assert_eq!(base("<lastname>[0]", &r), "Ł");
        assert_eq!(base("<institute>[1]", &r), "小");
        assert_eq!(base("<institute>[-2:]", &r), "小龍");
    }

    #[test]
    fn field_modifiers_apply_before_the_slice_global_ones_after() {
        let r = record(&[("givenName", "Ömer"), ("familyName", "Özdemir")]);
        assert_eq!(base("<firstname:umlauts>[0]", &r), "O");
        assert_eq!(base("<:umlauts><firstname>[0]", &r), "Oe");
        assert_eq!(base("<firstname:umlauts>[0:3]", &r), "Oem");
        assert_eq!(base("<:umlauts><firstname>[0:3]", &r), "Oeme");
    }

    #[test]
    fn global_case_modifiers_apply_from_here_on() {
        assert_eq!(
            base("<:lower><firstname>.<lastname>", &ada()),
            "ada.lovelace"
        );
        assert_eq!(
            base("<:upper><firstname>.<lastname>", &ada()),
            "ADA.LOVELACE"
        );
        assert_eq!(
            base("<firstname>.<:lower><lastname>", &ada()),
            "Ada.lovelace"
        );
        assert_eq!(
            base("<:upper>x-<firstname><:lower>-Y-<lastname>", &ada()),
            "X-ADA-y-lovelace"
        );
        assert_eq!(base("<:lower,umlauts>Ä<firstname>", &ada()), "aeada");
    }

    #[test]
    fn field_case_modifiers_apply_to_that_field_only() {
        assert_eq!(base("<firstname:upper>.<lastname>", &ada()), "ADA.Lovelace");
        assert_eq!(
            base("<:lower><firstname:upper>.<lastname>", &ada()),
            "ADA.lovelace"
        );
        assert_eq!(
            base("<:upper><firstname:lower>.<lastname>", &ada()),
            "ada.LOVELACE"
        );
        let r = record(&[("givenName", "Jürgen"), ("familyName", "Groß")]);
        assert_eq!(
            base("<firstname:umlauts,lower>.<lastname:umlauts,lower>", &r),
            "juergen.gross"
        );
        assert_eq!(
            base("<firstname:umlauts,lower>.<lastname>", &r),
            "juergen.Groß"
        );
        assert_eq!(base("<lastname:umlauts,upper>", &r), "GROSS");
        let r = record(&[("givenName", "Jürgen"), ("familyName", "Müller")]);
        assert_eq!(base("<:umlauts><lastname:upper>", &r), "MUELLER");
        assert_eq!(base("<:umlauts><:lower><lastname:upper>", &r), "MUELLER");
        assert_eq!(base("<:umlauts><:upper><firstname:lower>", &r), "juergen");
        assert_eq!(base("<firstname: lower , umlauts >", &r), "juergen");
    }

    #[test]
    fn accessors() {
        let t =
            Template::parse("<firstname>[0]<lastname><firstname:upper>[ALWAYSCOUNTER]").unwrap();
        assert_eq!(t.fields(), vec!["firstname", "lastname"]);
        assert_eq!(t.counter(), Counter::Always);
        assert_eq!(
            t.text(),
            "<firstname>[0]<lastname><firstname:upper>[ALWAYSCOUNTER]"
        );
        assert_eq!(
            Template::parse("<x>[COUNTER2]").unwrap().counter(),
            Counter::FromSecond
        );
        assert_eq!(Template::parse("<x>").unwrap().counter(), Counter::None);
        // The base has no counter, and nothing removed or cut.
        assert_eq!(t.base(&ada()).unwrap(), "ALovelaceADA");
        let t = Template::parse("<lastname> O'<firstname>[COUNTER2]").unwrap();
        assert_eq!(t.base(&ada()).unwrap(), "Lovelace O'Ada");
    }

    // --- record errors ---

    #[test]
    fn unknown_field_names_the_field_position_and_the_record_fields() {
        let t = Template::parse("<:lower><firstname>[0].<surname>").unwrap();
        let err = t.base(&ada()).unwrap_err();
        assert_eq!(
            err,
            SchemeError::UnknownField {
                field: "surname".into(),
                position: 24,
                known: vec!["familyName".into(), "givenName".into()],
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown field `surname` at position 24; the record has: familyName, givenName"
        );
        let err = Template::parse("<lastname>")
            .unwrap()
            .base(&record(&[("uid", "1")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown field `lastname` at position 1 (or `familyName`); the record has: uid"
        );
    }

    #[test]
    fn empty_field_is_an_error() {
        let r = record(&[("givenName", "  "), ("familyName", "Lovelace")]);
        let err = Template::parse("x<firstname>")
            .unwrap()
            .base(&r)
            .unwrap_err();
        assert_eq!(
            err,
            SchemeError::EmptyField {
                field: "firstname".into(),
                position: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "field `firstname` (position 2) is empty in this record"
        );
    }

    // --- usernames ---

    #[test]
    fn characters_not_allowed_in_usernames_are_removed() {
        let r = record(&[
            ("givenName", "Seán"),
            ("familyName", "O'Brien-Smith van der Berg"),
        ]);
        let got = user("<:umlauts><:lower><lastname>", &r, None, None, &[]).unwrap();
        assert_eq!(got.0, "obrien-smithvanderberg");
        let r = record(&[("givenName", "Ada!"), ("familyName", "Love(lace)")]);
        assert_eq!(
            user("<:lower><firstname>_<lastname>", &r, None, None, &[])
                .unwrap()
                .0,
            "ada_lovelace"
        );
        let r = record(&[("givenName", "Ada"), ("familyName", "O’Brien")]);
        assert_eq!(
            user("<:lower><firstname>.<lastname>", &r, None, None, &[])
                .unwrap()
                .0,
            "ada.obrien"
        );
    }

    #[test]
    fn empty_result_names_the_fields_used() {
        let r = record(&[("givenName", "Иван"), ("familyName", "'")]);
        let err = user(
            "<:umlauts><:lower><firstname><lastname>",
            &r,
            None,
            None,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err,
            SchemeError::EmptyResult {
                fields: vec!["firstname".into(), "lastname".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "the scheme gives an empty result for this record (fields used: firstname, lastname)"
        );
        // An index beyond the value gives nothing, too.
        let err = user("<firstname>[9]", &ada(), None, None, &[]).unwrap_err();
        assert_eq!(
            err,
            SchemeError::EmptyResult {
                fields: vec!["firstname".into()]
            }
        );
    }

    #[test]
    fn username_rule_is_checked_with_hints() {
        let err = user("<firstname>.<lastname>", &ada(), None, None, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "generated username `Ada.Lovelace` is invalid: `A` is not allowed, only a-z, 0-9, '.', '_' and '-' (add <:lower>)"
        );
        let r = record(&[("givenName", "jürgen")]);
        let err = user("<firstname>", &r, None, None, &[]).unwrap_err();
        assert!(err.to_string().ends_with("(add <:umlauts>)"), "{err}");
        let r = record(&[("recordUID", "42"), ("givenName", "ada")]);
        let err = user("<recordUID><firstname>", &r, None, None, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "generated username `42ada` is invalid: it starts with `4`, not a letter a-z or '_'"
        );
        assert_eq!(user("u<recordUID>", &r, None, None, &[]).unwrap().0, "u42");
        assert_eq!(user("_<firstname>", &r, None, None, &[]).unwrap().0, "_ada");
    }

    #[test]
    fn check_username_agrees_with_the_api_pattern() {
        let pattern = regex::Regex::new(crate::api::NAME_PATTERN).unwrap();
        let samples = [
            "a",
            "_",
            "ada",
            "a.lovelace",
            "a-b_c.d9",
            "a2",
            "9a",
            ".a",
            "-a",
            "Ada",
            "aé",
            "a b",
            "abcdefghijklmnopqrstuvwxyz012345",
            "abcdefghijklmnopqrstuvwxyz0123456",
            "",
            "a@b",
        ];
        for s in samples {
            assert_eq!(check_username(s).is_ok(), pattern.is_match(s), "{s:?}");
        }
    }

    #[test]
    fn no_counter_free_or_taken() {
        let t = "<:lower><firstname>[0]<lastname>";
        assert_eq!(
            user(t, &ada(), None, None, &[]).unwrap(),
            ("alovelace".to_string(), None)
        );
        // A stored counter means nothing without a counter in the scheme.
        assert_eq!(
            user(t, &ada(), None, Some(7), &[]).unwrap(),
            ("alovelace".to_string(), None)
        );
        let err = user(t, &ada(), None, None, &["alovelace"]).unwrap_err();
        assert_eq!(
            err,
            SchemeError::Taken {
                username: "alovelace".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "username `alovelace` is taken and the scheme has no counter"
        );
    }

    #[test]
    fn counter2_first_use_has_no_number() {
        let t = "<:lower><firstname>[0]<lastname>[COUNTER2]";
        assert_eq!(
            user(t, &ada(), None, None, &[]).unwrap(),
            ("alovelace".to_string(), Some(2))
        );
    }

    #[test]
    fn counter2_skips_taken_names() {
        let t = "<:lower><firstname>[0]<lastname>[COUNTER2]";
        assert_eq!(
            user(t, &ada(), None, None, &["alovelace"]).unwrap(),
            ("alovelace2".to_string(), Some(3))
        );
        assert_eq!(
            user(
                t,
                &ada(),
                None,
                None,
                &["alovelace", "alovelace2", "alovelace3"]
            )
            .unwrap(),
            ("alovelace4".to_string(), Some(5))
        );
    }

    #[test]
    fn counter2_continues_from_the_stored_counter() {
        let t = "<:lower><firstname>[0]<lastname>[COUNTER2]";
        assert_eq!(
            user(t, &ada(), None, Some(2), &[]).unwrap(),
            ("alovelace2".to_string(), Some(3))
        );
        assert_eq!(
            user(t, &ada(), None, Some(5), &["alovelace5"]).unwrap(),
            ("alovelace6".to_string(), Some(7))
        );
        // 0 and 1 mean "nothing given yet": the bare name comes first.
        assert_eq!(
            user(t, &ada(), None, Some(1), &[]).unwrap(),
            ("alovelace".to_string(), Some(2))
        );
        assert_eq!(
            user(t, &ada(), None, Some(0), &[]).unwrap(),
            ("alovelace".to_string(), Some(2))
        );
    }

    #[test]
    fn counter2_never_reuses_a_lower_number_even_if_free() {
        let t = "<:lower><firstname>[0]<lastname>[COUNTER2]";
        let tried = std::cell::RefCell::new(Vec::new());
        let taken = |name: &str| {
            tried.borrow_mut().push(name.to_string());
            name == "alovelace3"
        };
        let template = Template::parse(t).unwrap();
        // alovelace and alovelace2 were given once and are free again; they are never offered.
        let got = username(&template, &ada(), None, Some(3), &taken).unwrap();
        assert_eq!(got, ("alovelace4".to_string(), Some(5)));
        assert_eq!(*tried.borrow(), vec!["alovelace3", "alovelace4"]);
    }

    #[test]
    fn always_counter() {
        let t = "<:lower><lastname>[ALWAYSCOUNTER]";
        assert_eq!(
            user(t, &ada(), None, None, &[]).unwrap(),
            ("lovelace1".to_string(), Some(2))
        );
        assert_eq!(
            user(t, &ada(), None, None, &["lovelace1", "lovelace2"]).unwrap(),
            ("lovelace3".to_string(), Some(4))
        );
        assert_eq!(
            user(t, &ada(), None, Some(7), &[]).unwrap(),
            ("lovelace7".to_string(), Some(8))
        );
        assert_eq!(
            user(t, &ada(), None, Some(0), &[]).unwrap(),
            ("lovelace1".to_string(), Some(2))
        );
        // The bare base is never a candidate.
        assert_eq!(user(t, &ada(), None, None, &[]).unwrap().0, "lovelace1");
    }

    #[test]
    fn counter_search_is_bounded() {
        let t = Template::parse("<:lower><lastname>[COUNTER2]").unwrap();
        let err = username(&t, &ada(), None, None, &|_| true).unwrap_err();
        assert_eq!(
            err,
            SchemeError::CounterExhausted {
                base: "lovelace".into(),
                start: 1,
                tries: MAX_TRIES
            }
        );
        let err = username(&t, &ada(), None, Some(u32::MAX), &|_| true).unwrap_err();
        assert_eq!(
            err,
            SchemeError::CounterExhausted {
                base: "lovelace".into(),
                start: u32::MAX,
                tries: 1
            }
        );
    }

    #[test]
    fn max_length_cuts_the_base_before_the_counter() {
        let t = "<:lower><firstname>[0]<lastname>[COUNTER2]";
        assert_eq!(
            user(t, &ada(), Some(5), None, &[]).unwrap(),
            ("alove".to_string(), Some(2))
        );
        assert_eq!(
            user(t, &ada(), Some(5), None, &["alove"]).unwrap(),
            ("alove2".to_string(), Some(3))
        );
        assert_eq!(
            user(t, &ada(), Some(5), Some(12), &[]).unwrap(),
            ("alove12".to_string(), Some(13))
        );
        assert_eq!(user(t, &ada(), Some(50), None, &[]).unwrap().0, "alovelace");
        // The counter key is the cut base.
        let template = Template::parse(t).unwrap();
        assert_eq!(username_base(&template, &ada(), Some(5)).unwrap(), "alove");
        // Removal happens before the cut, so the cut keeps max_length real characters.
        let r = record(&[("familyName", "O'Neil-Smith")]);
        assert_eq!(
            user("<:lower><lastname>", &r, Some(4), None, &[])
                .unwrap()
                .0,
            "onei"
        );
        assert_eq!(
            user(t, &ada(), Some(0), None, &[]).unwrap_err(),
            SchemeError::BadMaxLength
        );
    }

    #[test]
    fn the_name_with_its_counter_must_still_fit() {
        let r = record(&[("familyName", "abcdefghijklmnopqrstuvwxyzabcdefghij")]);
        let t = "<lastname>[COUNTER2]";
        // Without maxLength a name over 32 characters fails.
        let err = user(t, &r, None, None, &[]).unwrap_err();
        assert!(matches!(err, SchemeError::InvalidUsername { .. }), "{err}");
        assert_eq!(user(t, &r, Some(32), None, &[]).unwrap().0.len(), 32);
        // A full-length base leaves no room for the counter.
        let err = user(t, &r, Some(32), None, &["abcdefghijklmnopqrstuvwxyzabcdef"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "generated username `abcdefghijklmnopqrstuvwxyzabcdef2` is invalid: 33 characters, at most 32 allowed (a maxLength leaves room for the counter)"
        );
        assert_eq!(
            user(t, &r, Some(30), Some(99), &[]).unwrap().0,
            "abcdefghijklmnopqrstuvwxyzabcd99"
        );
    }

    // --- parse errors ---

    #[test]
    fn parse_errors_name_the_position() {
        let cases: [(&str, SchemeError, &str); 17] = [
            ("", SchemeError::EmptyTemplate, "the scheme is empty"),
            (
                "a<firstname",
                SchemeError::UnclosedTag { position: 2 },
                "`<` at position 2 is not closed by `>`",
            ),
            (
                "<first<name>",
                SchemeError::UnclosedTag { position: 1 },
                "`<` at position 1 is not closed by `>`",
            ),
            (
                "<x>[0",
                SchemeError::UnclosedBracket { position: 4 },
                "`[` at position 4 is not closed by `]`",
            ),
            (
                "ab[COUNTER2",
                SchemeError::UnclosedBracket { position: 3 },
                "`[` at position 3 is not closed by `]`",
            ),
            (
                "<x>>",
                SchemeError::Unexpected {
                    found: '>',
                    position: 4,
                },
                "unexpected `>` at position 4",
            ),
            (
                "<x>[0]]",
                SchemeError::Unexpected {
                    found: ']',
                    position: 7,
                },
                "unexpected `]` at position 7",
            ),
            (
                "<x>[COUNTER]",
                SchemeError::UnknownBracket {
                    text: "COUNTER".into(),
                    position: 4,
                },
                "unknown `[COUNTER]` at position 4: expected [COUNTER2] or [ALWAYSCOUNTER] at the end, or [N] / [A:B] right after a <field>",
            ),
            (
                "ab[0]",
                SchemeError::UnknownBracket {
                    text: "0".into(),
                    position: 3,
                },
                "unknown `[0]` at position 3: expected [COUNTER2] or [ALWAYSCOUNTER] at the end, or [N] / [A:B] right after a <field>",
            ),
            (
                "<x>[COUNTER2].y",
                SchemeError::CounterNotAtEnd { position: 4 },
                "the counter at position 4 must be at the end of the scheme",
            ),
            (
                "<x>[COUNTER2][ALWAYSCOUNTER]",
                SchemeError::CounterNotAtEnd { position: 4 },
                "the counter at position 4 must be at the end of the scheme",
            ),
            (
                "<x>[ALWAYSCOUNTER]<:lower>",
                SchemeError::CounterNotAtEnd { position: 4 },
                "the counter at position 4 must be at the end of the scheme",
            ),
            (
                "<first name>",
                SchemeError::BadFieldName {
                    name: "first name".into(),
                    position: 1,
                },
                "bad field name `first name` at position 1: use ASCII letters, digits, '_', '.' or '-'",
            ),
            (
                "a<:umlaut>",
                SchemeError::UnknownModifier {
                    modifier: "umlaut".into(),
                    position: 2,
                },
                "unknown modifier `umlaut` at position 2 (known: umlauts, lower, upper, strip, alpha, alphanum)",
            ),
            (
                "<x:lower,upper>",
                SchemeError::ConflictingModifiers {
                    first: "lower",
                    second: "upper",
                    position: 1,
                },
                "`lower` and `upper` together at position 1",
            ),
            (
                "<x>.<y:alphanum,alpha>",
                SchemeError::ConflictingModifiers {
                    first: "alpha",
                    second: "alphanum",
                    position: 5,
                },
                "`alpha` and `alphanum` together at position 5",
            ),
            (
                "<x:>",
                SchemeError::UnknownModifier {
                    modifier: "".into(),
                    position: 1,
                },
                "unknown modifier `` at position 1 (known: umlauts, lower, upper, strip, alpha, alphanum)",
            ),
        ];
        for (template, want, message) in cases {
            let err = parse_err(template);
            assert_eq!(err, want, "{template}");
            assert_eq!(err.to_string(), message, "{template}");
        }
        assert_eq!(
            parse_err("<>"),
            SchemeError::BadFieldName {
                name: "".into(),
                position: 1
            }
        );
        assert_eq!(
            parse_err("<:>"),
            SchemeError::UnknownModifier {
                modifier: "".into(),
                position: 1
            }
        );
        assert_eq!(
            parse_err("<fïrst>"),
            SchemeError::BadFieldName {
                name: "fïrst".into(),
                position: 1
            }
        );
    }

    #[test]
    fn a_word_after_a_field_is_a_mistyped_counter_not_a_slice() {
        for (template, text) in [
            ("<x>[a]", "a"),
            ("<x>[COUNTER]", "COUNTER"),
            ("<x>[Counter2]", "Counter2"),
        ] {
            assert_eq!(
                parse_err(template),
                SchemeError::UnknownBracket {
                    text: text.into(),
                    position: 4
                },
                "{template}"
            );
        }
    }

    #[test]
    fn bad_slices() {
        let cases = [
            ("<x>[]", "", "expected an index [N] or a slice [A:B]"),
            ("<x>[1.5]", "1.5", "`1.5` is not an integer"),
            ("<x>[1:b]", "1:b", "`b` is not an integer"),
            ("<x>[--1]", "--1", "`--1` is not an integer"),
            ("<x>[-]", "-", "`-` is not an integer"),
            ("<x>[ 1]", " 1", "` 1` is not an integer"),
            ("<x>[1:2:3]", "1:2:3", "a step ([A:B:C]) is not supported"),
            (
                "<x>[99999999999999999999]",
                "99999999999999999999",
                "`99999999999999999999` is out of range",
            ),
        ];
        for (template, text, reason) in cases {
            let err = parse_err(template);
            assert_eq!(
                err,
                SchemeError::BadSlice {
                    text: text.into(),
                    position: 4,
                    reason: reason.into()
                },
                "{template}"
            );
            assert_eq!(
                err.to_string(),
                format!("bad slice `[{text}]` at position 4: {reason}")
            );
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(parse_err("äöü<x"), SchemeError::UnclosedTag { position: 4 });
        assert_eq!(
            parse_err("ß<x>[1é]"),
            SchemeError::BadSlice {
                text: "1é".into(),
                position: 5,
                reason: "`1é` is not an integer".into()
            }
        );
        assert_eq!(
            parse_err("ß<x>[é]"),
            SchemeError::UnknownBracket {
                text: "é".into(),
                position: 5
            }
        );
    }

    #[test]
    fn counter_right_after_a_field_or_literal() {
        assert_eq!(
            Template::parse("<x>[COUNTER2]").unwrap().counter(),
            Counter::FromSecond
        );
        assert_eq!(
            Template::parse("<x>[0:2]x[ALWAYSCOUNTER]")
                .unwrap()
                .counter(),
            Counter::Always
        );
        assert_eq!(
            Template::parse("<x>[-1][COUNTER2]").unwrap().counter(),
            Counter::FromSecond
        );
        // A slice after a slice is not allowed.
        assert_eq!(
            parse_err("<x>[0][1]"),
            SchemeError::UnknownBracket {
                text: "1".into(),
                position: 7
            }
        );
    }

    // --- e-mail ---

    #[test]
    fn email_scheme_good() {
        let t = Template::parse("<firstname:umlauts,lower>.<lastname:umlauts,lower>@example.org")
            .unwrap();
        let r = record(&[("givenName", "Jürgen"), ("familyName", "Groß")]);
        assert_eq!(email(&t, &r).unwrap(), "juergen.gross@example.org");
        let t = Template::parse("<:umlauts><:lower><firstname>[0].<lastname>@Phys.Uni-Example.DE")
            .unwrap();
        assert_eq!(email(&t, &ada()).unwrap(), "a.lovelace@phys.uni-example.de");
        let r = record(&[
            ("givenName", "Ada"),
            ("familyName", "O'Brien"),
            ("recordUID", "E42"),
        ]);
        let t = Template::parse("<:lower><lastname:alpha>+<recordUID>@example.org").unwrap();
        assert_eq!(email(&t, &r).unwrap(), "obrien+e42@example.org");
        let t = Template::parse("<recordUID>@localhost").unwrap();
        assert_eq!(email(&t, &r).unwrap(), "E42@localhost");
    }

    #[test]
    fn email_scheme_bad() {
        let bad = |template: &str, fields: &BTreeMap<String, String>| {
            email(&Template::parse(template).unwrap(), fields).unwrap_err()
        };
        let r = record(&[
            ("givenName", "Ada"),
            ("familyName", "van der Berg"),
            ("institute", "Müller"),
        ]);
        let reason = |err: SchemeError| match err {
            SchemeError::InvalidEmail { reason, .. } => reason,
            other => panic!("not InvalidEmail: {other}"),
        };
        assert_eq!(reason(bad("<firstname>.example.org", &r)), "it has no '@'");
        assert_eq!(
            reason(bad("<firstname>@a@example.org", &r)),
            "it has more than one '@'"
        );
        assert_eq!(
            reason(bad("<lastname>@example.org", &r)),
            "it contains whitespace (add :strip or :alpha to the field)"
        );
        assert_eq!(
            reason(bad("<institute>@example.org", &r)),
            "it contains `ü`, not ASCII (add <:umlauts>)"
        );
        assert_eq!(
            reason(bad("@example.org", &r)),
            "the local part has 0 characters, 1 to 64 allowed"
        );
        assert_eq!(
            reason(bad("<firstname>.@example.org", &r)),
            "the local part starts or ends with '.' or has '..'"
        );
        assert_eq!(
            reason(bad("a..<firstname>@example.org", &r)),
            "the local part starts or ends with '.' or has '..'"
        );
        assert_eq!(
            reason(bad("a\"b@example.org", &r)),
            "`\"` is not allowed in the local part (letters, digits, '.', '_', '-', '+'; add :alpha to the field)"
        );
        let irish = record(&[("givenName", "Ann"), ("familyName", "O'Brien")]);
        assert_eq!(
            reason(bad("<lastname:lower>@example.org", &irish)),
            "`'` is not allowed in the local part (letters, digits, '.', '_', '-', '+'; add :alpha to the field)"
        );
        assert_eq!(
            reason(bad("<firstname>@", &r)),
            "the domain has 0 characters, 1 to 253 allowed"
        );
        assert_eq!(
            reason(bad("<firstname>@example..org", &r)),
            "the domain label `` must be 1 to 63 letters, digits or inner '-'"
        );
        assert_eq!(
            reason(bad("<firstname>@-example.org", &r)),
            "the domain label `-example` must be 1 to 63 letters, digits or inner '-'"
        );
        assert_eq!(
            reason(bad("<firstname>@ex_ample.org", &r)),
            "the domain label `ex_ample` must be 1 to 63 letters, digits or inner '-'"
        );
        let long = "x".repeat(65);
        assert_eq!(
            reason(bad(&format!("{long}@example.org"), &r)),
            "the local part has 65 characters, 1 to 64 allowed"
        );
        assert_eq!(
            bad("<lastname>@example.org", &r).to_string(),
            "generated e-mail address `van der Berg@example.org` is invalid: it contains whitespace (add :strip or :alpha to the field)"
        );
        assert_eq!(
            bad("<firstname>[5]<lastname>[99]", &r),
            SchemeError::EmptyResult {
                fields: vec!["firstname".into(), "lastname".into()]
            }
        );
        let placed = |t: &str| Template::parse_email(t).unwrap_err();
        assert_eq!(
            placed("<firstname>@example.org[COUNTER2]"),
            SchemeError::CounterNotBeforeAt { position: 24 }
        );
        assert_eq!(
            placed("<firstname>[COUNTER2].x@example.org").to_string(),
            "the counter at position 12 must stand right before the '@' (the end of the local part: <firstname>.<lastname>[COUNTER2]@example.org)"
        );
        assert_eq!(
            placed("<firstname>[COUNTER2]@x[ALWAYSCOUNTER]"),
            SchemeError::SecondCounter { position: 24 }
        );
        // A username scheme keeps its counter at the very end.
        assert_eq!(
            parse_err("<firstname>[COUNTER2]@example.org"),
            SchemeError::CounterNotAtEnd { position: 12 }
        );
        assert_eq!(
            bad("<surname>@example.org", &r),
            SchemeError::UnknownField {
                field: "surname".into(),
                position: 1,
                known: vec!["familyName".into(), "givenName".into(), "institute".into()],
            }
        );
    }

    // --- e-mail counters and the name-safe modifiers ---

    fn address(
        template: &str,
        fields: &BTreeMap<String, String>,
        next: Option<u32>,
        taken: &[&str],
    ) -> Result<(String, Option<u32>, String), SchemeError> {
        let t = Template::parse_email(template).unwrap();
        email_numbered(&t, fields, next, &|a| taken.contains(&a))
    }

    #[test]
    fn email_counters_count_like_username_counters() {
        let maria = record(&[("givenName", "Maria"), ("familyName", "Schmidt")]);
        let scheme = "<firstname:lower>.<lastname:lower>[COUNTER2]@example.org";
        let bare = "maria.schmidt@example.org".to_string();
        assert_eq!(
            address(scheme, &maria, None, &[]).unwrap(),
            (bare.clone(), Some(2), bare.clone())
        );
        // The second Maria Schmidt: the first one's address is taken.
        assert_eq!(
            address(scheme, &maria, None, &["maria.schmidt@example.org"]).unwrap(),
            ("maria.schmidt2@example.org".into(), Some(3), bare.clone())
        );
        // The stored counter is where counting starts, never lower (historically unique).
        assert_eq!(
            address(scheme, &maria, Some(5), &[]).unwrap().0,
            "maria.schmidt5@example.org"
        );
        let always = "<firstname:lower>.<lastname:lower>[ALWAYSCOUNTER]@example.org";
        assert_eq!(
            address(always, &maria, None, &[]).unwrap(),
            ("maria.schmidt1@example.org".into(), Some(2), bare.clone())
        );
        // Fields after the '@' (a mail domain per record).
        let r = record(&[
            ("givenName", "Maria"),
            ("familyName", "Schmidt"),
            ("maildomain", "Physik.Example.DE"),
        ]);
        assert_eq!(
            address(
                "<:lower><firstname>[0]<lastname>[COUNTER2]@<maildomain>",
                &r,
                None,
                &["mschmidt@physik.example.de"]
            )
            .unwrap()
            .0,
            "mschmidt2@physik.example.de"
        );
        // Without a counter the address is the caller's to refuse when taken.
        assert_eq!(
            address(
                "<firstname:lower>@example.org",
                &maria,
                None,
                &["maria@example.org"]
            )
            .unwrap(),
            ("maria@example.org".into(), None, "maria@example.org".into())
        );
        // Every candidate is checked: a counter that makes the local part too long.
        let long = record(&[("givenName", &"a".repeat(64)), ("familyName", "x")]);
        let err = address(
            "<firstname>[COUNTER2]@example.org",
            &long,
            None,
            &[&format!("{}@example.org", "a".repeat(64))],
        )
        .unwrap_err();
        assert!(
            matches!(&err, SchemeError::InvalidEmail { email, .. } if email.starts_with(&format!("{}2@", "a".repeat(64)))),
            "{err}"
        );
    }

    #[test]
    fn a_person_keeps_the_address_their_counter_gave() {
        let maria = record(&[("givenName", "Maria"), ("familyName", "Schmidt")]);
        let t = Template::parse_email("<firstname:lower>.<lastname:lower>[COUNTER2]@example.org")
            .unwrap();
        for (address, matches) in [
            ("maria.schmidt@example.org", true),
            ("Maria.Schmidt3@Example.org", true),
            ("maria.schmidt2@example.org", true),
            ("maria.schmidt1@example.org", false),
            ("maria.schmidt02@example.org", false),
            ("maria.schmidtx@example.org", false),
            ("maria.schmid@example.org", false),
            ("anna.schmidt@example.org", false),
        ] {
            assert_eq!(email_matches(&t, &maria, address), matches, "{address}");
        }
        let always = Template::parse_email("<firstname:lower>[ALWAYSCOUNTER]@example.org").unwrap();
        assert!(email_matches(&always, &maria, "maria1@example.org"));
        assert!(!email_matches(&always, &maria, "maria@example.org"));
        let none = Template::parse_email("<firstname:lower>@example.org").unwrap();
        assert!(email_matches(&none, &maria, "maria@example.org"));
        assert!(!email_matches(&none, &maria, "maria2@example.org"));
    }

    /// Compound and hyphenated surnames, apostrophes and letters beyond Latin-1, made address-
    /// and name-safe by the field modifiers; literal text is never filtered.
    #[test]
    fn name_safe_modifiers() {
        let scheme = "<firstname:umlauts,alpha,lower>.<lastname:umlauts,alpha,lower>@example.org";
        for (given, family, want) in [
            ("Jan", "van der Berg", "jan.vanderberg@example.org"),
            ("María José", "de la Cruz", "mariajose.delacruz@example.org"),
            ("Aoife", "Ní Bhriain", "aoife.nibhriain@example.org"),
            ("Seán", "O'Brien", "sean.obrien@example.org"),
            ("Thị", "Nguyễn", "thi.nguyen@example.org"),
            (
                "Jürgen",
                "Müller-Lüdenscheidt",
                "juergen.muellerluedenscheidt@example.org",
            ),
        ] {
            let r = record(&[("givenName", given), ("familyName", family)]);
            assert_eq!(
                email(&Template::parse(scheme).unwrap(), &r).unwrap(),
                want,
                "{given} {family}"
            );
        }
        let r = record(&[("givenName", "Jan"), ("familyName", "van der Berg-2")]);
        // strip keeps the hyphen and digits, alphanum the digits.
        assert_eq!(base("<lastname:strip>", &r), "vanderBerg-2");
        assert_eq!(base("<lastname:alphanum>", &r), "vanderBerg2");
        assert_eq!(base("<lastname:alpha>", &r), "vanderBerg");
        // Global: applies to the fields after it, not to literal text.
        assert_eq!(
            base("<:alpha,lower><firstname>.<lastname>-x", &r),
            "jan.vanderberg-x"
        );
        assert_eq!(
            base("<firstname> <:strip><lastname> x", &r),
            "Jan vanderBerg-2 x"
        );
        // Before the slice, as the field's other modifiers.
        assert_eq!(base("<lastname:alpha>[0:4]", &r), "vand");
        // A global modifier applies after the slice (as UCS@school's do).
        assert_eq!(base("<:alpha><lastname>[0:4]", &r), "van");
        assert_eq!(base("<lastname>[0:4]", &r), "van ");
        // Without umlauts, alpha keeps letters of any script.
        let r = record(&[("givenName", "Zoë"), ("familyName", "O'Brien")]);
        assert_eq!(base("<firstname:alpha><lastname:alpha>", &r), "ZoëOBrien");
        // A username scheme too: usernames of compound names.
        let r = record(&[("givenName", "Jan"), ("familyName", "van der Berg")]);
        assert_eq!(
            user(
                "<:umlauts,lower><firstname>[0]<lastname:alpha>[COUNTER2]",
                &r,
                Some(8),
                None,
                &["jvanderb"]
            )
            .unwrap(),
            ("jvanderb2".into(), Some(3))
        );
    }
}
