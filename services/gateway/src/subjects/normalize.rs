//! Matching keys for looking subjects up by e-mail or phone. Values are kept as written for
//! display; only the keys are normalized: NFKC (full-width to half-width), trimmed, case-folded,
//! and phone numbers in E.164 with Japanese national formats understood (`090-1234-5678`,
//! `０９０１２３４５６７８` and `+81 90 1234 5678` are one number).
//!
//! The same rules as the leads service's duplicate detection, so a key read from a lead finds
//! its subject. (A copy: services share no code but the libs; see the crate docs.)

use unicode_normalization::UnicodeNormalization;

/// Country calling code assumed for national numbers (a leading `0`).
const DEFAULT_COUNTRY_CODE: &str = "81";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_phone_spellings_are_one_number() {
        for phone in [
            "090-1234-5678",
            "０９０１２３４５６７８",
            "+81 90 1234 5678",
            "(090) 1234 5678",
        ] {
            assert_eq!(phone_key(phone), "+819012345678", "{phone}");
        }
        assert_eq!(phone_key(""), "");
    }

    #[test]
    fn email_keys_fold_width_and_case() {
        assert_eq!(
            email_key("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｃｏｍ "),
            "taro@example.com"
        );
    }
}
