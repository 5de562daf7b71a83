//! Request validation that collects every violation before answering.

/// One bad field: its path in the request (e.g. `lead.email`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// Field path, in the request's own names.
    pub field: String,
    /// What is wrong, for a person.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Collects violations; `finish` turns them into one INVALID_ARGUMENT.
#[derive(Debug, Default)]
pub struct Validator {
    violations: Vec<FieldViolation>,
}

impl Validator {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn violation(
        &mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> &mut Self {
        self.violations
            .push(FieldViolation::new(field, description));
        self
    }

    /// Records a violation when `ok` is false.
    pub fn check(&mut self, ok: bool, field: &str, description: &str) -> &mut Self {
        if !ok {
            self.violation(field, description);
        }
        self
    }

    /// The field must be non-blank.
    pub fn required(&mut self, field: &str, value: &str) -> &mut Self {
        self.check(!value.trim().is_empty(), field, "is required")
    }

    /// The field must be at most `max` characters.
    pub fn max_chars(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        if value.chars().count() > max {
            self.violation(field, format!("must be at most {max} characters"));
        }
        self
    }

    /// Required and at most `max` characters.
    pub fn required_max(&mut self, field: &str, value: &str, max: usize) -> &mut Self {
        self.required(field, value).max_chars(field, value, max)
    }

    /// An e-mail address, when present.
    pub fn email(&mut self, field: &str, value: &str) -> &mut Self {
        // Full-width input (ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ) is accepted as its NFKC form.
        if !value.is_empty() && !looks_like_email(&kizuna_normalize::text_key(value)) {
            self.violation(field, "is not an e-mail address");
        }
        self.max_chars(field, value, 254)
    }

    /// A phone number, when present, as [`kizuna_normalize::parse_phone`] reads it (national or
    /// international, any dash, bracket, space or width, an optional extension).
    pub fn phone(&mut self, field: &str, value: &str) -> &mut Self {
        if !value.is_empty()
            && let Err(why) = kizuna_normalize::parse_phone(value)
        {
            self.violation(field, format!("is not a phone number: it {why}"));
        }
        self
    }

    /// A known enum value (not the UNSPECIFIED zero) when `required`, and never an unknown number.
    pub fn enum_value(
        &mut self,
        field: &str,
        known: bool,
        value: i32,
        required: bool,
    ) -> &mut Self {
        if !known {
            self.violation(field, format!("unknown value {value}"));
        } else if required && value == 0 {
            self.violation(field, "is required (UNSPECIFIED is not allowed)");
        }
        self
    }

    /// An ISO 4217 currency code: three upper-case letters.
    pub fn currency(&mut self, field: &str, value: &str) -> &mut Self {
        let ok = value.len() == 3 && value.chars().all(|c| c.is_ascii_uppercase());
        self.check(ok, field, "must be an ISO 4217 code such as JPY or USD")
    }

    /// A resource name of the form `<collection>/<id>`, when present.
    pub fn resource_name(&mut self, field: &str, value: &str, collection: &str) -> &mut Self {
        if !value.is_empty() {
            let ok = value
                .strip_prefix(collection)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|id| !id.is_empty() && !id.contains('/'));
            if !ok {
                self.violation(
                    field,
                    format!("must be a resource name like `{collection}/{{id}}`"),
                );
            }
        }
        self
    }

    /// Whether nothing was recorded yet.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` when no violation was recorded, else one INVALID_ARGUMENT with all of them.
    pub fn finish(&mut self) -> Result<(), crate::ApiError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(crate::ApiError::InvalidArgument(std::mem::take(
                &mut self.violations,
            )))
        }
    }
}

fn looks_like_email(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !value.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_all_violations() {
        let mut v = Validator::new();
        v.required("a", " ")
            .email("b", "not-an-email")
            .phone("c", "090-1234-5678")
            .currency("d", "jpy");
        let Err(crate::ApiError::InvalidArgument(violations)) = v.finish() else {
            panic!("expected invalid argument")
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["a", "b", "d"]);
    }

    #[test]
    fn japanese_phone_spellings_are_accepted() {
        for phone in [
            "090-1234-5678",
            "+81 90 1234 5678",
            "０９０１２３４５６７８",
            "(03) 1234-5678",
            "+81-(0)90-1234-5678",
            "03–1234–5678 内線 12",
            "03-1234-5678 ext. 12",
            "+44 (0)20 7946 0000",
        ] {
            let mut v = Validator::new();
            v.phone("phone", phone);
            assert!(v.is_clean(), "{phone}");
        }
        for phone in ["12", "03-1234-5678 (代表)", "call me"] {
            let mut v = Validator::new();
            v.phone("phone", phone);
            assert!(!v.is_clean(), "{phone}");
        }
    }

    #[test]
    fn resource_names_are_checked() {
        let mut v = Validator::new();
        v.resource_name("x", "leads/abc", "leads")
            .resource_name("y", "deals/abc", "leads")
            .resource_name("z", "leads/", "leads");
        let Err(crate::ApiError::InvalidArgument(violations)) = v.finish() else {
            panic!()
        };
        assert_eq!(violations.len(), 2);
    }
}
