//! Matching keys for duplicate detection and cross-service lookups. Values are kept as written
//! for display; only the keys are normalized: NFKC (full-width to half-width), trimmed,
//! case-folded, and phone numbers in E.164 with Japanese national formats understood
//! (`090-1234-5678`, `０９０１２３４５６７８` and `+81 90 1234 5678` are one number).
//!
//! Every service computes keys with these functions, so a lead, a contact, an account and a
//! subject with the same e-mail or phone always match.

use unicode_normalization::UnicodeNormalization;

/// Country calling code assumed for national numbers (a leading `0`).
pub const DEFAULT_COUNTRY_CODE: &str = "81";

/// The matching key of an e-mail address (empty when there is none).
pub fn email_key(email: &str) -> String {
    email.nfkc().collect::<String>().trim().to_lowercase()
}

/// The E.164 matching key of a phone number (empty when it has no digits).
pub fn phone_key(phone: &str) -> String {
    let normalized: String = phone.nfkc().collect();
    let trimmed = normalized.trim();
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return String::new();
    }
    if trimmed.starts_with('+') {
        format!("+{digits}")
    } else if let Some(international) = digits.strip_prefix("00") {
        format!("+{international}")
    } else if let Some(national) = digits.strip_prefix('0') {
        format!("+{DEFAULT_COUNTRY_CODE}{national}")
    } else {
        format!("+{digits}")
    }
}

/// Text folded for matching (NFKC, trimmed, lower case), e.g. company names.
pub fn text_key(text: &str) -> String {
    text.nfkc().collect::<String>().trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_phone_spellings_are_one_number() {
        let expected = "+819012345678";
        for phone in [
            "090-1234-5678",
            "０９０１２３４５６７８",
            "+81 90 1234 5678",
            "＋８１ ９０-１２３４-５６７８",
            "(090) 1234 5678",
        ] {
            assert_eq!(phone_key(phone), expected, "{phone}");
        }
        assert_eq!(phone_key("0081 90 1234 5678"), expected);
        assert_eq!(phone_key(""), "");
        assert_eq!(phone_key("ext."), "");
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
