//! The username and e-mail scheme language of ImportSources (`roster::import::scheme`): a
//! template from the ImportSource, field values from an upstream export.
//!
//! Properties besides "no panic":
//! - a parsed template keeps its text, and its fields are names of the allowed characters;
//!   a parse error points inside the template;
//! - a username base is non-empty, within `maxLength` and of username characters only;
//! - a generated username satisfies the API's username rule (`NAME_PATTERN`, the rule admission
//!   applies), is not taken, is the base plus the counter the scheme asks for, and the counter
//!   to store is one past the number used, never below the stored one;
//! - with every name taken, no username is ever generated;
//! - `<:umlauts>` (transliterate) gives ASCII only;
//! - a generated e-mail address is ASCII, without whitespace or control characters, with one
//!   `@` between a non-empty local part and domain.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use roster::import::scheme::{self, Counter, SchemeError, Template};

static USERNAME: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(roster::api::NAME_PATTERN).unwrap());

/// One case: a template, a record, the stored counter and the names already taken.
struct Input {
    template: String,
    fields: BTreeMap<String, String>,
    max_length: Option<usize>,
    next: Option<u32>,
    taken: BTreeSet<String>,
    /// Every candidate is taken.
    all_taken: bool,
}

// The first byte sets maxLength (bits 0-3: none, or 1 to 15),
// the stored counter (bits 4-6: none, 0, 1, 2, 9, u32::MAX - 1, u32::MAX, 1000) and whether
// every name is taken (bit 7). The rest is text: the template on the first line, then the
// record as `field=value` lines; lines `!name` are taken names.
fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = text.split('\n');
    let template = lines.next().unwrap_or_default().to_string();
    let mut fields = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for line in lines {
        if let Some(name) = line.strip_prefix('!') {
            taken.insert(name.to_string());
        } else if let Some((k, v)) = line.split_once('=') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    check(Input {
        template,
        fields,
        max_length: match flags & 15 {
            0 => None,
            n => Some(usize::from(n)),
        },
        next: [
            None,
            Some(0),
            Some(1),
            Some(2),
            Some(9),
            Some(u32::MAX - 1),
            Some(u32::MAX),
            Some(1000),
        ][usize::from((flags >> 4) & 7)],
        taken,
        all_taken: flags & 128 != 0,
    });
});

fn check(input: Input) {
    let fields = &input.fields;
    for value in fields.values() {
        let t = scheme::transliterate(value);
        assert!(
            t.is_ascii(),
            "transliterate({value:?}) = {t:?} is not ASCII"
        );
    }
    let template = match Template::parse(&input.template) {
        Ok(t) => t,
        Err(e) => {
            check_parse_error(&input.template, &e);
            return;
        }
    };
    assert_eq!(template.text(), input.template);
    for f in template.fields() {
        assert!(
            !f.is_empty()
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')),
            "field name {f:?}"
        );
    }
    let max = input.max_length;
    let base = match scheme::username_base(&template, fields, max) {
        Ok(b) => {
            assert!(!b.is_empty());
            assert!(
                b.chars().count() <= max.unwrap_or(usize::MAX),
                "{b:?} > {max:?}"
            );
            assert!(
                b.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-')),
                "base {b:?}"
            );
            Some(b)
        }
        Err(_) => None,
    };
    let all_taken = input.all_taken;
    let is_taken = |n: &str| all_taken || input.taken.contains(n);
    let result = scheme::username(&template, fields, max, input.next, &is_taken);
    if let Ok((name, stored)) = &result {
        assert!(
            !all_taken,
            "{name:?} generated although every name is taken"
        );
        let base = base.expect("a username without a base");
        check_username(&template, &base, name, *stored, input.next);
        assert!(!is_taken(name), "{name:?} is taken");
    }
    if let Ok(address) = scheme::email(&template, fields) {
        assert!(
            address.chars().all(|c| c.is_ascii_graphic()),
            "address {address:?}"
        );
        let (local, domain) = address.split_once('@').expect("an address without @");
        assert!(!local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    }
}

fn check_username(t: &Template, base: &str, name: &str, stored: Option<u32>, next: Option<u32>) {
    assert!(
        USERNAME.is_match(name),
        "generated username {name:?} breaks {}",
        roster::api::NAME_PATTERN
    );
    let start = next.unwrap_or(1).max(1);
    match t.counter() {
        Counter::None => {
            assert_eq!(name, base);
            assert_eq!(stored, None);
        }
        counter => {
            let stored = stored.expect("a counter scheme stores its counter");
            let number = stored - 1;
            assert!(number >= start, "counter {number} below the stored {start}");
            let expected = if counter == Counter::FromSecond && number == 1 {
                base.to_string()
            } else {
                format!("{base}{number}")
            };
            assert_eq!(name, expected);
        }
    }
}

fn check_parse_error(text: &str, e: &SchemeError) {
    let len = text.chars().count();
    let position = match e {
        SchemeError::UnclosedTag { position }
        | SchemeError::UnclosedBracket { position }
        | SchemeError::Unexpected { position, .. }
        | SchemeError::BadFieldName { position, .. }
        | SchemeError::UnknownModifier { position, .. }
        | SchemeError::ConflictingModifiers { position, .. }
        | SchemeError::BadSlice { position, .. }
        | SchemeError::UnknownBracket { position, .. }
        | SchemeError::CounterNotAtEnd { position }
        | SchemeError::CounterNotBeforeAt { position }
        | SchemeError::SecondCounter { position } => *position,
        SchemeError::EmptyTemplate => {
            assert!(text.is_empty());
            return;
        }
        other => panic!("parse gave a record error: {other:?}"),
    };
    assert!(
        (1..=len).contains(&position),
        "{e} points outside the {len} characters of {text:?}"
    );
}
