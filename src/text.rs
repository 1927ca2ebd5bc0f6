//! Latin text to ASCII, for the places that cannot hold anything else: usernames and e-mail
//! local parts made by import schemes (`<:umlauts>`), and every value sent to Gold (which hashes
//! Latin-1 and pastes values into SQL).
//!
//! German umlauts become two letters (`ä` → `ae`, `Ö` → `Oe`, `ß` → `ss`), as UCS@school and
//! German registries spell them; every other precomposed Latin letter — anything Unicode
//! decomposes into a base letter and marks, in Latin-1, Latin Extended-A/B and Latin Extended
//! Additional (Vietnamese included) — becomes its base letter through Unicode's compatibility
//! decomposition (NFKD, so ligatures such as `ǆ` and `ﬁ` come apart too); the letters that have no
//! decomposition (`ø`, `ł`, `đ`, `ħ`, `ŧ`, `ı`, `ŋ`, `æ`, `œ`, `þ`, `ð`, `ĸ`, `ſ`) have a table.
//! What is still not ASCII (other scripts, symbols) is dropped.

use icu_normalizer::DecomposingNormalizerBorrowed;

/// The ASCII spelling of Latin text (see the module docs); never anything but ASCII.
pub fn to_ascii(s: &str) -> String {
    let nfkd = DecomposingNormalizerBorrowed::new_nfkd();
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii() {
            out.push(c);
            // Decomposed input: an umlaut written as a vowel and a combining diaeresis.
            if matches!(c, 'a' | 'o' | 'u' | 'A' | 'O' | 'U') && chars.peek() == Some(&'\u{308}') {
                out.push('e');
                chars.next();
            }
        } else if let Some(t) = special(c) {
            out.push_str(t);
        } else {
            let mut buf = [0u8; 4];
            for d in nfkd.normalize(c.encode_utf8(&mut buf)).chars() {
                if d.is_ascii() {
                    out.push(d);
                } else if let Some(t) = special(d) {
                    out.push_str(t);
                }
            }
        }
    }
    out
}

/// Letters spelled by convention rather than by decomposition.
fn special(c: char) -> Option<&'static str> {
    Some(match c {
        'Ä' => "Ae",
        'Ö' => "Oe",
        'Ü' => "Ue",
        'ä' => "ae",
        'ö' => "oe",
        'ü' => "ue",
        'ß' => "ss",
        'ẞ' => "SS",
        'Æ' | 'Ǽ' | 'Ǣ' => "Ae",
        'æ' | 'ǽ' | 'ǣ' => "ae",
        'Œ' => "Oe",
        'œ' => "oe",
        'Þ' => "Th",
        'þ' => "th",
        'Ø' | 'Ǿ' => "O",
        'ø' | 'ǿ' => "o",
        'Ð' | 'Đ' | 'Ɖ' | 'Ɗ' | 'Ƌ' => "D",
        'ð' | 'đ' | 'ƌ' | 'ȡ' => "d",
        'Ħ' => "H",
        'ħ' => "h",
        'Ł' | 'Ƚ' => "L",
        'ł' | 'ƚ' | 'ȴ' => "l",
        'Ŧ' | 'Ƭ' | 'Ʈ' | 'Ⱦ' => "T",
        'ŧ' | 'ƫ' | 'ƭ' | 'ȶ' => "t",
        'ı' | 'ȷ' => "i",
        'Ŋ' => "N",
        'ŋ' | 'ƞ' | 'ȵ' => "n",
        'ĸ' => "k",
        'ſ' => "s",
        'ƀ' => "b",
        'Ɓ' | 'Ƃ' | 'Ƀ' => "B",
        'ƃ' => "b",
        'Ƈ' | 'Ȼ' => "C",
        'ƈ' | 'ȼ' => "c",
        'Ƒ' => "F",
        'ƒ' => "f",
        'Ɠ' | 'Ǥ' => "G",
        'ǥ' => "g",
        'Ƙ' => "K",
        'ƙ' => "k",
        'Ɲ' | 'Ƞ' => "N",
        'Ɵ' => "O",
        'Ƥ' => "P",
        'ƥ' => "p",
        'Ʋ' => "V",
        'Ƴ' => "Y",
        'ƴ' => "y",
        'Ƶ' | 'Ȥ' => "Z",
        'ƶ' | 'ȥ' | 'ɀ' => "z",
        'Ʉ' => "U",
        'Ɇ' => "E",
        'ɇ' => "e",
        'Ɉ' => "J",
        'ɉ' => "j",
        'Ɍ' => "R",
        'ɍ' => "r",
        'Ɏ' => "Y",
        'ɏ' => "y",
        'ȿ' => "s",
        'Ⱥ' => "A",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every precomposed letter of the Latin blocks (a letter with a canonical decomposition)
    /// comes out as its base letter, or two letters for the German umlauts.
    #[test]
    fn every_precomposed_latin_letter_becomes_its_base_letter() {
        let nfd = icu_normalizer::DecomposingNormalizerBorrowed::new_nfd();
        let ranges = [0xC0..=0x24F, 0x1E00..=0x1EFF];
        let mut checked = 0;
        for c in ranges.into_iter().flatten().filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let s = c.encode_utf8(&mut buf);
            let d = nfd.normalize(s);
            let Some(base) = d.chars().next().filter(|b| b.is_ascii_alphabetic()) else {
                continue;
            };
            if d.chars().count() < 2 {
                continue;
            }
            checked += 1;
            let want = match c {
                'Ä' | 'Ö' | 'Ü' | 'ä' | 'ö' | 'ü' => format!("{base}e"),
                _ => base.to_string(),
            };
            assert_eq!(to_ascii(s), want, "{c} (U+{:04X})", c as u32);
        }
        assert!(checked > 450, "{checked} letters checked");
    }

    /// Letters of the Latin blocks that are no Latin base letter with marks (schwa, ezh, yogh,
    /// wynn, click and tone letters, reversed and turned forms …): dropped, like other scripts.
    const NOT_BASE_LETTERS: &[char] = &[
        'ƍ', 'ƛ', 'ƪ', 'ƾ', 'ǝ', 'Ə', 'ə', 'Ɛ', 'Ɣ', 'Ɩ', 'Ɯ', 'Ʊ', 'Ʒ', 'Ƹ', 'ƹ', 'ƺ', 'ƻ', 'Ƽ',
        'ƽ', 'ƿ', 'Ƿ', 'Ƨ', 'ƨ', 'Ʃ', 'Ɔ', 'Ǝ', 'Ɂ', 'ɂ', 'Ʀ', 'Ǯ', 'ǯ', 'Ȝ', 'ȝ', 'Ȣ', 'ȣ', 'ȸ',
        'ȹ', 'Ƣ', 'ƣ', 'Ɋ', 'ɋ', 'Ʌ', 'ẜ', 'ẝ', 'ẟ', 'Ỻ', 'ỻ', 'Ỽ', 'ỽ', 'Ỿ', 'ỿ', 'Ƅ', 'ƅ', 'Ɨ',
        'ƕ', 'Ƕ', 'ǀ', 'ǁ', 'ǂ', 'ǃ',
    ];

    /// And every letter of those blocks, precomposed or not, comes out as ASCII letters: none
    /// is dropped (the reason for the table of letters without a decomposition).
    #[test]
    fn no_latin_letter_is_dropped() {
        let ranges = [0xC0..=0x24F, 0x1E00..=0x1EFF];
        let mut dropped = vec![];
        for c in ranges.into_iter().flatten().filter_map(char::from_u32) {
            if !c.is_alphabetic() || NOT_BASE_LETTERS.contains(&c) {
                continue;
            }
            let t = to_ascii(&c.to_string());
            if t.is_empty() || !t.chars().all(|x| x.is_ascii_alphabetic()) {
                dropped.push(format!("{c} (U+{:04X}) → {t:?}", c as u32));
            }
        }
        assert!(dropped.is_empty(), "{dropped:#?}");
    }

    #[test]
    fn names_people_have() {
        for (name, ascii) in [
            ("Nguyễn Thị Phương Đặng", "Nguyen Thi Phuong Dang"),
            ("Jürgen Müller-Groß", "Juergen Mueller-Gross"),
            ("Łukasz Żółć", "Lukasz Zolc"),
            ("Søren Ærø", "Soren Aero"),
            ("Ní Bhriain", "Ni Bhriain"),
            ("Dž ǅ ǆ ﬁ", "Dz Dz dz fi"),
            ("Mu\u{308}ller", "Mueller"),
            ("Jose\u{301}", "Jose"),
            ("Иван 李 😀", "  "),
            ("O'Brien", "O'Brien"),
        ] {
            assert_eq!(to_ascii(name), ascii, "{name}");
        }
        let all: String = (0x80..=0x2FFF).filter_map(char::from_u32).collect();
        assert!(to_ascii(&all).is_ascii());
    }
}
