//! Matching keys for duplicate detection and cross-service lookups. Values are kept as written
//! for display; only the keys are normalized: NFKC (full-width to half-width), trimmed,
//! case-folded, and phone numbers as E.164 (`+` and digits).
//!
//! Every service computes keys with these functions, so a lead, a contact, an account and a
//! subject with the same e-mail or phone always match.
//!
//! # Phone numbers
//!
//! [`parse_phone`] reads a number as people write it, after NFKC (so `０９０`, `＋８１`, `（０３）`
//! and the ideographic space are their ASCII forms):
//!
//! - **Separators** between digits are ignored: spaces, `-`, the dash family `‐ ‑ ‒ – — ― − ⁃`,
//!   the katakana long-vowel mark `ー` (often typed for a hyphen), `.` and brackets `( ) [ ]`.
//!   A `tel:` scheme (RFC 3966) before the number is skipped.
//! - **Extension**: the number ends at `内線`, `内`, `ext`, `ext.`, `extension`, `x`, `#`,
//!   `;ext=` or `,` (optionally inside brackets: `(内線 123)`); the extension digits are kept
//!   apart in [`PhoneNumber::extension`] and are not part of the key, so `03-1234-5678 内線 12`
//!   matches `03-1234-5678`. A `～`/`〜` range (`03-1234-5678～9`) keys its first number.
//! - **International forms**: a leading `+`; `00` (`0081 90 …`); `010`, Japan's international
//!   prefix (`010-81-90-…`), also after a carrier code (`001`, `0033`, `0041`, `0046`, `0061`,
//!   `0091`, as in `001-010-1-415-…`); or digits that do not start with `0` (`81 90 …`), read as
//!   already carrying a country code.
//! - **Trunk prefix**: in an international form, a `0` right after the country code, written
//!   bare or as `(0)`, is the national trunk prefix and is dropped: `+81-(0)90-1234-5678`,
//!   `+81 090 …` and `090-1234-5678` are one number, as are `+44 (0)20 7946 0000` and
//!   `020 7946 0000` dialled in the UK. Countries whose numbers themselves begin with `0` keep
//!   it: Italy (39), San Marino (378), Vatican (379), Côte d'Ivoire (225), Gabon (241) and the
//!   Republic of the Congo (242). The country code's length follows the E.164 zones (1 and 7 are
//!   one digit; 20, 27, 30–34, 36, 39, 40, 41, 43–49, 51–58, 60–66, 81, 82, 84, 86, 90–95 and 98
//!   are two; the rest three).
//! - **National forms**: a single leading `0` is the Japanese trunk prefix
//!   ([`DEFAULT_COUNTRY_CODE`]): `090-1234-5678`, `03-1234-5678`, `0120-123-456` and
//!   `050-1234-5678` become `+8190…`, `+813…`, `+81120…`, `+8150…`.
//!
//! [`phone_key`] is lenient (anything after the number is ignored) so stored values always get
//! a key; [`parse_phone`] is strict and tells a validator what is wrong.

use unicode_normalization::UnicodeNormalization;

/// Country calling code assumed for national numbers (a leading `0`).
pub const DEFAULT_COUNTRY_CODE: &str = "81";

/// Fewest digits of a phone number's E.164 form (country code included).
pub const MIN_PHONE_DIGITS: usize = 5;
/// Most digits of a phone number's E.164 form (country code included), per E.164.
pub const MAX_PHONE_DIGITS: usize = 15;
/// Most digits of an extension.
pub const MAX_EXTENSION_DIGITS: usize = 10;

/// The matching key of an e-mail address (empty when there is none).
pub fn email_key(email: &str) -> String {
    email.nfkc().collect::<String>().trim().to_lowercase()
}

/// A phone number read by [`parse_phone`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneNumber {
    /// E.164: `+`, country code, national number without its trunk prefix.
    pub e164: String,
    /// Extension digits (`内線 123` gives `123`); empty when there is none.
    pub extension: String,
}

/// Why [`parse_phone`] refused a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// No digit at all.
    #[error("has no digits")]
    NoDigits,
    /// Too few or too many digits for an E.164 number.
    #[error("must have {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits with the country code")]
    Length,
    /// An extension marker without digits, or too many.
    #[error("extension must be 1 to {MAX_EXTENSION_DIGITS} digits")]
    Extension,
    /// Something else than separators, an extension or a `tel:` scheme around the number.
    #[error("has characters other than digits, separators and an extension")]
    Characters,
}

/// Whether `c` (after NFKC) separates digit groups.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '-' | '\u{2010}'
                | '\u{2011}'
                | '\u{2012}'
                | '\u{2013}'
                | '\u{2014}'
                | '\u{2015}'
                | '\u{2043}'
                | '\u{2212}'
                | '\u{30fc}'
                | '.'
                | '('
                | ')'
                | '['
                | ']'
        )
}

/// Extension markers, lower case, longest first so `ext.` wins over `ext` and `内線` over `内`.
const EXTENSION_MARKERS: [&str; 9] = [
    ";ext=",
    "extension",
    "ext.",
    "ext",
    "内線",
    "内",
    "x",
    "#",
    ",",
];

/// Japanese carrier codes that precede the international prefix `010`.
const CARRIER_CODES: [&str; 6] = ["001", "0033", "0041", "0046", "0061", "0091"];

/// Two-digit country codes; 1 and 7 are one digit, all others three (E.164 zone layout).
const TWO_DIGIT_COUNTRY_CODES: [&str; 44] = [
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

/// Countries whose national numbers begin with `0`, so a `0` after the code is not a trunk.
const ZERO_LEADING_COUNTRIES: [&str; 6] = ["39", "378", "379", "225", "241", "242"];

/// The length of the country code at the start of `digits`.
fn country_code_len(digits: &str) -> usize {
    if digits.starts_with('1') || digits.starts_with('7') {
        1
    } else if TWO_DIGIT_COUNTRY_CODES
        .iter()
        .any(|code| digits.starts_with(code))
    {
        2
    } else {
        3
    }
}

/// The number split from what follows it.
struct Split<'a> {
    /// Whether a `+` came before the first digit.
    plus: bool,
    /// The digits of the number.
    digits: String,
    /// What follows the number (extension, range, other text), trimmed.
    tail: &'a str,
    /// Whether something other than a `tel:` scheme, `+` or separators came before the digits.
    junk_before: bool,
}

fn split(text: &str) -> Split<'_> {
    let lower_prefix = text.get(..4).map(str::to_ascii_lowercase);
    let body = if lower_prefix.as_deref() == Some("tel:") {
        &text[4..]
    } else {
        text
    };
    let mut plus = false;
    let mut junk_before = false;
    let mut digits = String::new();
    let mut end = body.len();
    for (at, c) in body.char_indices() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if digits.is_empty() && !plus => plus = true,
            c if is_separator(c) => {}
            _ if digits.is_empty() => junk_before = true,
            _ => {
                end = at;
                break;
            }
        }
    }
    Split {
        plus,
        digits,
        tail: body[end..].trim(),
        junk_before,
    }
}

/// The extension digits of `tail`, `Ok("")` without one; `Err` when `tail` is not an extension.
fn extension(tail: &str) -> Result<String, PhoneError> {
    if tail.is_empty() {
        return Ok(String::new());
    }
    let lower = tail.to_lowercase();
    let lower = lower.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    let Some(rest) = EXTENSION_MARKERS
        .iter()
        .find_map(|marker| lower.strip_prefix(marker))
    else {
        return Err(PhoneError::Characters);
    };
    let rest = rest.trim_start_matches([':', '：', '.']);
    let rest = rest.trim().trim_end_matches(')').trim();
    if rest
        .chars()
        .any(|c| !c.is_ascii_digit() && !is_separator(c))
    {
        return Err(PhoneError::Characters);
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > MAX_EXTENSION_DIGITS {
        return Err(PhoneError::Extension);
    }
    Ok(digits)
}

/// The E.164 form of the digits of a number (`plus`: written with a leading `+`).
fn e164(plus: bool, digits: &str) -> String {
    let international = if plus {
        Some(digits)
    } else if let Some(rest) = CARRIER_CODES
        .iter()
        .find_map(|carrier| digits.strip_prefix(carrier)?.strip_prefix("010"))
    {
        Some(rest)
    } else if let Some(rest) = digits.strip_prefix("010") {
        Some(rest)
    } else if let Some(rest) = digits.strip_prefix("00") {
        Some(rest)
    } else if digits.starts_with('0') {
        None
    } else {
        Some(digits)
    };
    match international {
        Some(digits) => {
            let (country, national) = digits.split_at(country_code_len(digits).min(digits.len()));
            let national = match national.strip_prefix('0') {
                Some(rest) if !ZERO_LEADING_COUNTRIES.contains(&country) => rest,
                _ => national,
            };
            format!("+{country}{national}")
        }
        None => format!("+{DEFAULT_COUNTRY_CODE}{}", &digits[1..]),
    }
}

/// Reads a phone number strictly (the rules are in the module header): the number, optionally
/// a `tel:` scheme before it and an extension after it, nothing else.
pub fn parse_phone(phone: &str) -> Result<PhoneNumber, PhoneError> {
    let normalized: String = phone.nfkc().collect();
    let parts = split(normalized.trim());
    if parts.digits.is_empty() {
        return Err(PhoneError::NoDigits);
    }
    if parts.junk_before {
        return Err(PhoneError::Characters);
    }
    let extension = extension(parts.tail)?;
    let e164 = e164(parts.plus, &parts.digits);
    if !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&(e164.len() - 1)) {
        return Err(PhoneError::Length);
    }
    Ok(PhoneNumber { e164, extension })
}

/// The E.164 matching key of a phone number (empty when it has no digits). Lenient: text
/// before the first digit and anything after the number (an extension, a range, a note) are
/// ignored.
pub fn phone_key(phone: &str) -> String {
    let normalized: String = phone.nfkc().collect();
    let parts = split(normalized.trim());
    if parts.digits.is_empty() {
        return String::new();
    }
    e164(parts.plus, &parts.digits)
}

/// Text folded for matching (NFKC, trimmed, lower case), e.g. company names.
pub fn text_key(text: &str) -> String {
    text.nfkc().collect::<String>().trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn same_number(expected: &str, spellings: &[&str]) {
        for phone in spellings {
            assert_eq!(phone_key(phone), expected, "key of {phone:?}");
            let parsed = parse_phone(phone).unwrap_or_else(|e| panic!("{phone:?}: {e}"));
            assert_eq!(parsed.e164, expected, "parse of {phone:?}");
        }
        assert_eq!(phone_key(expected), expected, "a key keys to itself");
    }

    #[test]
    fn japanese_mobile_spellings_are_one_number() {
        same_number(
            "+819012345678",
            &[
                "090-1234-5678",
                "09012345678",
                "０９０１２３４５６７８",
                "０９０－１２３４－５６７８",
                "090ー1234ー5678",
                "090ｰ1234ｰ5678",
                "090−1234−5678",
                "090‐1234‐5678",
                "090‑1234‑5678",
                "090–1234–5678",
                "090—1234—5678",
                "090―1234―5678",
                "090.1234.5678",
                "090 1234 5678",
                "090\u{3000}1234\u{3000}5678",
                "(090) 1234 5678",
                "（０９０）１２３４‐５６７８",
                "+81 90 1234 5678",
                "+81-90-1234-5678",
                "+81 (0)90 1234 5678",
                "+81-(0)90-1234-5678",
                "+81 090 1234 5678",
                "+81(90)1234-5678",
                "＋８１ ９０-１２３４-５６７８",
                "＋８１（０）９０－１２３４－５６７８",
                "0081 90 1234 5678",
                "0081-(0)90-1234-5678",
                "010-81-90-1234-5678",
                "001-010-81-90-1234-5678",
                "81 90 1234 5678",
                "81-(0)90-1234-5678",
                "tel:+81-90-1234-5678",
                "TEL:090-1234-5678",
                " 090-1234-5678 ",
            ],
        );
    }

    #[test]
    fn japanese_landline_free_dial_and_ip_numbers() {
        same_number(
            "+81312345678",
            &[
                "03-1234-5678",
                "(03) 1234-5678",
                "+81 3 1234 5678",
                "+81 (0)3-1234-5678",
            ],
        );
        same_number("+81662345678", &["06-6234-5678", "+81-6-6234-5678"]);
        same_number("+81120123456", &["0120-123-456", "+81 120 123 456"]);
        same_number("+81570012345", &["0570-012-345"]);
        same_number("+815012345678", &["050-1234-5678", "+81 50 1234 5678"]);
        same_number("+81995123456", &["0995-12-3456"]);
    }

    #[test]
    fn other_countries_drop_their_trunk_prefix() {
        same_number(
            "+14155550123",
            &[
                "+1 415 555 0123",
                "+1 (415) 555-0123",
                "1-415-555-0123",
                "001 415 555 0123",
                "010-1-415-555-0123",
                "001-010-1-415-555-0123",
                "0061-010-1-415-555-0123",
            ],
        );
        same_number(
            "+442079460000",
            &[
                "+44 (0)20 7946 0000",
                "+44 20 7946 0000",
                "0044 (0) 20 7946 0000",
                "+44 020 7946 0000",
            ],
        );
        same_number(
            "+33123456789",
            &["+33 (0)1 23 45 67 89", "+33 1 23 45 67 89"],
        );
        same_number("+4930123456", &["+49 (0)30 123456", "+49 30 123456"]);
        same_number("+8613812345678", &["+86 138 1234 5678"]);
        same_number("+85223456789", &["+852 2345 6789"]);
    }

    #[test]
    fn countries_whose_numbers_begin_with_zero_keep_it() {
        same_number("+390669812345", &["+39 06 6981 2345", "0039 06 6981 2345"]);
        same_number("+2250701234567", &["+225 07 0123 4567"]);
    }

    #[test]
    fn extensions_are_kept_out_of_the_key() {
        for (phone, extension) in [
            ("03-1234-5678 内線 123", "123"),
            ("03-1234-5678（内線１２３）", "123"),
            ("03-1234-5678 内123", "123"),
            ("03-1234-5678 ext. 123", "123"),
            ("03-1234-5678 Ext 45", "45"),
            ("03-1234-5678 extension 45", "45"),
            ("03-1234-5678 x45", "45"),
            ("03-1234-5678#45", "45"),
            ("tel:+81-3-1234-5678;ext=45", "45"),
            ("03-1234-5678 (ext: 45)", "45"),
            ("03-1234-5678", ""),
        ] {
            let parsed = parse_phone(phone).unwrap_or_else(|e| panic!("{phone:?}: {e}"));
            assert_eq!(parsed.e164, "+81312345678", "{phone:?}");
            assert_eq!(parsed.extension, extension, "{phone:?}");
            assert_eq!(phone_key(phone), "+81312345678", "{phone:?}");
        }
        assert_eq!(phone_key("03-1234-5678～9"), "+81312345678");
        assert_eq!(phone_key("03-1234-5678〜9"), "+81312345678");
    }

    #[test]
    fn what_is_not_a_phone_number_is_refused() {
        assert_eq!(parse_phone(""), Err(PhoneError::NoDigits));
        assert_eq!(parse_phone("ext."), Err(PhoneError::NoDigits));
        assert_eq!(parse_phone("123"), Err(PhoneError::Length));
        assert_eq!(
            parse_phone("+81 90 1234 5678 9012 3456"),
            Err(PhoneError::Length)
        );
        assert_eq!(parse_phone("03-1234-5678 内線"), Err(PhoneError::Extension));
        assert_eq!(
            parse_phone("03-1234-5678 (代表)"),
            Err(PhoneError::Characters)
        );
        assert_eq!(parse_phone("03-1234-5678～9"), Err(PhoneError::Characters));
        assert_eq!(
            parse_phone("call 03-1234-5678"),
            Err(PhoneError::Characters)
        );
        assert_eq!(
            parse_phone("03-1234-5678 / 090-1234-5678"),
            Err(PhoneError::Characters)
        );
        assert_eq!(phone_key(""), "");
        assert_eq!(phone_key("ext."), "");
    }

    #[test]
    fn keys_ignore_separators_and_width_for_any_digits() {
        // Property: for any digit string, inserting separators, using full-width forms or
        // appending an extension never changes the key.
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let separators = [
            "-", " ", "ー", "−", "‐", "–", "—", ".", "(", ")", "\u{3000}",
        ];
        for _ in 0..2_000 {
            let len = 6 + (next() % 9) as usize;
            let digits: String = (0..len)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let plain = phone_key(&digits);
            assert!(plain.starts_with('+') && plain[1..].chars().all(|c| c.is_ascii_digit()));
            let mut spelled = String::new();
            let mut wide = String::new();
            for (i, d) in digits.chars().enumerate() {
                if i > 0 && next() % 3 == 0 {
                    spelled.push_str(separators[next() as usize % separators.len()]);
                }
                spelled.push(d);
                wide.push(char::from_u32(0xff10 + d.to_digit(10).expect("digit")).expect("wide"));
            }
            assert_eq!(phone_key(&spelled), plain, "{spelled:?}");
            assert_eq!(phone_key(&wide), plain, "{wide:?}");
            assert_eq!(
                phone_key(&format!("{spelled} 内線 12")),
                plain,
                "{spelled:?}"
            );
        }
    }

    #[test]
    fn email_keys_fold_width_and_case() {
        assert_eq!(
            email_key(" Taro.Yamada@Example.co.jp "),
            "taro.yamada@example.co.jp"
        );
        assert_eq!(
            email_key("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ"),
            "taro@example.com"
        );
        assert_eq!(text_key(" ＫＩＺＵＮＡ 商事 "), "kizuna 商事");
    }
}
