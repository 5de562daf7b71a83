//! A minimal SQL text builder with numbered `$n` placeholders (both engines accept them) and
//! bound values kept beside the text, so no value is ever spliced into SQL.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AssertSqlSafe};

use crate::table::Value;

/// SQL text plus its arguments.
#[derive(Debug, Default, Clone)]
pub struct Sql {
    text: String,
    args: Vec<Value>,
}

impl Sql {
    /// Starts with trusted text (identifiers and keywords chosen by code, never by callers).
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
        }
    }

    /// Appends trusted text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Appends another fragment, renumbering its placeholders.
    pub fn append(&mut self, other: Sql) -> &mut Self {
        let offset = self.args.len();
        let mut chars = other.text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let n: usize = digits.parse().unwrap_or(0);
                self.text.push('$');
                self.text.push_str(&(n + offset).to_string());
            } else {
                self.text.push(c);
            }
        }
        self.args.extend(other.args);
        self
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A query with every value bound.
    pub fn query(self) -> Query<'static, Any, AnyArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.text));
        for arg in self.args {
            query = match arg {
                Value::Text(v) => query.bind(v),
                Value::Int(v) => query.bind(v),
                Value::Float(v) => query.bind(v),
                Value::Bytes(v) => query.bind(v),
            };
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_renumbers_placeholders() {
        let mut a = Sql::new("SELECT 1 WHERE a = ");
        a.bind("x");
        let mut b = Sql::new(" AND b = ");
        b.bind(2_i64).push(" AND c = ").bind(3_i64);
        a.append(b);
        assert_eq!(a.text(), "SELECT 1 WHERE a = $1 AND b = $2 AND c = $3");
    }
}
