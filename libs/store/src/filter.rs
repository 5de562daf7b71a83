//! A subset of the AIP-160 filter language, compiled to SQL over a table's indexed columns.
//!
//! Grammar: `expr := and (OR and)*`, `and := unary ([AND] unary)*`, `unary := NOT unary |
//! primary`, `primary := '(' expr ')' | FIELD OP VALUE`, with `OP` one of `= != < <= > >= :` (`:` is
//! "contains" for text). Values are quoted strings, numbers, `true`/`false` or bare words (enum
//! names). Times take RFC 3339 strings. Every value is bound as a parameter. Errors say where.
//!
//! [`parse`] is the boolean structure alone, with the terms left to a [`Terms`] implementation:
//! [`compile`] gives it `FIELD OP VALUE` over a table's columns, lead segments add tags and
//! `activity(...)` counts.

use kizuna_db::Backend;

use crate::sql::Sql;
use crate::table::{Column, ColumnKind, Value};
use crate::time::parse_rfc3339_micros;

/// A filter that could not be parsed or names an unknown field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct FilterError {
    /// Character offset (0-based) in the filter where the problem is.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// A filter token. Shared with richer filter languages built on this one (lead segments), which
/// also use `,` and the `~` operator; this module's own parser refuses both.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A field name, keyword (`AND`, `OR`, `NOT`) or bare value.
    Word(String),
    /// A quoted string, unescaped.
    Str(String),
    /// A number as written.
    Num(String),
    /// An operator: `=`, `!=`, `<`, `<=`, `>`, `>=`, `:` or `~`.
    Op(&'static str),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
}

/// Splits `input` into tokens with their character positions.
pub fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = match c {
            '(' => {
                i += 1;
                Token::LParen
            }
            ')' => {
                i += 1;
                Token::RParen
            }
            ',' => {
                i += 1;
                Token::Comma
            }
            '"' | '\'' => {
                i += 1;
                let mut value = String::new();
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(FilterError {
                                position: start,
                                message: "unterminated string".into(),
                            });
                        }
                        Some('\\') => {
                            let Some(next) = chars.get(i + 1) else {
                                return Err(FilterError {
                                    position: i,
                                    message: "dangling escape".into(),
                                });
                            };
                            value.push(*next);
                            i += 2;
                        }
                        Some(q) if *q == c => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            value.push(*other);
                            i += 1;
                        }
                    }
                }
                Token::Str(value)
            }
            '=' => {
                i += 1;
                Token::Op("=")
            }
            ':' => {
                i += 1;
                Token::Op(":")
            }
            '~' => {
                i += 1;
                Token::Op("~")
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Token::Op("!=")
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                i += if eq { 2 } else { 1 };
                Token::Op(match (c, eq) {
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    ('>', true) => ">=",
                    _ => ">",
                })
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let (value, end) = number(&chars, i);
                i = end;
                if !value.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(FilterError::at(
                        start,
                        format!(
                            "number `{value}` is out of range (at most about ±1.8e308, a 64-bit \
                             float)"
                        ),
                    ));
                }
                Token::Num(value)
            }
            '-' => {
                i += 1;
                Token::Word("NOT".into())
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut value = String::new();
                while let Some(d) = chars
                    .get(i)
                    .filter(|d| d.is_alphanumeric() || **d == '_' || **d == '.')
                {
                    value.push(*d);
                    i += 1;
                }
                Token::Word(value)
            }
            other => {
                return Err(FilterError {
                    position: start,
                    message: format!("unexpected character `{other}`"),
                });
            }
        };
        tokens.push((start, token));
    }
    Ok(tokens)
}

/// A number literal starting at `start` (a digit, or `-` before one): `-? digits (. digits*)?
/// ([eE] [+-]? digits)?`, e.g. `42`, `-0.5`, `1e3`, `1E-2`, `-1e308`; the exponent is taken only
/// when digits follow it, so `30d` stays `30` then `d`. Returns the literal and where it ends.
fn number(chars: &[char], start: usize) -> (String, usize) {
    let digits_from = |mut i: usize| {
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut end = digits_from(start + 1);
    if chars.get(end) == Some(&'.') {
        end = digits_from(end + 1);
    }
    if chars.get(end).is_some_and(|c| matches!(c, 'e' | 'E')) {
        let sign = usize::from(chars.get(end + 1).is_some_and(|c| matches!(c, '+' | '-')));
        let exponent = end + 1 + sign;
        if chars.get(exponent).is_some_and(char::is_ascii_digit) {
            end = digits_from(exponent);
        }
    }
    (chars[start..end].iter().collect(), end)
}

/// Most nested parentheses (and `NOT`s) in a filter.
pub const MAX_DEPTH: usize = 32;
/// Most tokens in a filter.
pub const MAX_TOKENS: usize = 512;

impl FilterError {
    /// An error at `position` (0-based character offset).
    pub fn at(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

/// What a filter language puts between the boolean operators. [`parse`] handles `AND`, `OR`,
/// juxtaposition, `NOT`, parentheses, nesting and token limits, and calls [`Terms::term`] at
/// every word that starts a term.
pub trait Terms {
    /// Compiles the term at the cursor (a word: a field, or a function such as a segment's
    /// `activity(...)`), consuming its tokens.
    fn term(&mut self, cursor: &mut Cursor) -> Result<Sql, FilterError>;
}

/// The tokens of a filter and the position of the parse in them.
#[derive(Debug)]
pub struct Cursor {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Cursor {
    /// The current token.
    pub fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    /// Whether the current token is the word `word`.
    pub fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    /// The character position of the current token (the end of the filter past the last).
    pub fn here(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(p, _)| *p)
    }

    /// Moves past the current token.
    pub fn advance(&mut self) {
        self.pos += 1;
    }

    /// Takes a word: its position and text.
    pub fn word(&mut self) -> Option<(usize, String)> {
        let position = self.here();
        match self.peek() {
            Some(Token::Word(word)) => {
                let word = word.clone();
                self.pos += 1;
                Some((position, word))
            }
            _ => None,
        }
    }

    /// Takes an operator, or fails with "expected an operator".
    pub fn op(&mut self) -> Result<(usize, &'static str), FilterError> {
        let position = self.here();
        match self.peek() {
            Some(Token::Op(op)) => {
                let op = *op;
                self.pos += 1;
                Ok((position, op))
            }
            _ => Err(FilterError::at(position, "expected an operator")),
        }
    }

    /// Takes a value (a quoted string, a number or a bare word), or fails with "expected a
    /// value".
    pub fn value(&mut self) -> Result<(usize, String), FilterError> {
        let position = self.here();
        match self.peek() {
            Some(Token::Str(s) | Token::Num(s) | Token::Word(s)) => {
                let value = s.clone();
                self.pos += 1;
                Ok((position, value))
            }
            _ => Err(FilterError::at(position, "expected a value")),
        }
    }

    fn nest(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FilterError::at(
                self.here(),
                format!("filter nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn expr(&mut self, terms: &mut impl Terms) -> Result<Sql, FilterError> {
        self.nest()?;
        let mut sql = Sql::new("(");
        sql.append(self.and(terms)?);
        while self.peek_word("OR") {
            self.pos += 1;
            sql.push(" OR ");
            sql.append(self.and(terms)?);
        }
        sql.push(")");
        self.depth -= 1;
        Ok(sql)
    }

    fn and(&mut self, terms: &mut impl Terms) -> Result<Sql, FilterError> {
        let mut sql = Sql::new("(");
        sql.append(self.unary(terms)?);
        loop {
            if self.peek_word("AND") {
                self.pos += 1;
            } else if matches!(self.peek(), Some(Token::Word(w)) if w != "OR")
                || matches!(self.peek(), Some(Token::LParen))
            {
                // AIP-160: juxtaposition means AND.
            } else {
                break;
            }
            sql.push(" AND ");
            sql.append(self.unary(terms)?);
        }
        sql.push(")");
        Ok(sql)
    }

    fn unary(&mut self, terms: &mut impl Terms) -> Result<Sql, FilterError> {
        if self.peek_word("NOT") {
            self.pos += 1;
            self.nest()?;
            let mut sql = Sql::new("NOT (");
            sql.append(self.unary(terms)?);
            sql.push(")");
            self.depth -= 1;
            return Ok(sql);
        }
        self.primary(terms)
    }

    fn primary(&mut self, terms: &mut impl Terms) -> Result<Sql, FilterError> {
        let position = self.here();
        match self.peek() {
            Some(Token::LParen) => {
                self.pos += 1;
                let sql = self.expr(terms)?;
                if self.peek() == Some(&Token::RParen) {
                    self.pos += 1;
                    Ok(sql)
                } else {
                    Err(FilterError::at(self.here(), "expected `)`"))
                }
            }
            Some(Token::Word(_)) => terms.term(self),
            Some(token) => Err(FilterError::at(position, format!("unexpected {token:?}"))),
            None => Err(FilterError::at(position, "unexpected end of filter")),
        }
    }
}

/// Parses `filter`'s boolean structure, compiling its terms with `terms`. An empty filter gives
/// `None`.
pub fn parse(filter: &str, terms: &mut impl Terms) -> Result<Option<Sql>, FilterError> {
    if filter.trim().is_empty() {
        return Ok(None);
    }
    let tokens = tokenize(filter)?;
    if tokens.len() > MAX_TOKENS {
        return Err(FilterError::at(
            0,
            format!("filter has more than {MAX_TOKENS} tokens"),
        ));
    }
    let mut cursor = Cursor {
        tokens,
        pos: 0,
        end: filter.chars().count(),
        depth: 0,
    };
    let sql = cursor.expr(terms)?;
    if let Some((position, token)) = cursor.tokens.get(cursor.pos) {
        return Err(FilterError::at(*position, format!("unexpected {token:?}")));
    }
    Ok(Some(sql))
}

/// Compiles `filter` to a SQL condition over `columns`. An empty filter gives `None`.
pub fn compile(
    filter: &str,
    columns: &[Column],
    backend: Backend,
) -> Result<Option<Sql>, FilterError> {
    parse(filter, &mut ColumnTerms { columns, backend })
}

/// `FIELD OP VALUE` over indexed columns.
struct ColumnTerms<'a> {
    columns: &'a [Column],
    backend: Backend,
}

impl Terms for ColumnTerms<'_> {
    fn term(&mut self, cursor: &mut Cursor) -> Result<Sql, FilterError> {
        let (position, field) = cursor
            .word()
            .ok_or_else(|| FilterError::at(cursor.here(), "expected a field"))?;
        let column = *self
            .columns
            .iter()
            .find(|c| c.field == field)
            .ok_or_else(|| FilterError::at(position, format!("unknown field `{field}`")))?;
        let (op_position, op) = cursor.op()?;
        if op == "~" {
            return Err(FilterError::at(
                op_position,
                "`~` is not supported here; use `:` for contains",
            ));
        }
        let (value_position, raw) = cursor.value()?;
        self.comparison(column, op, &raw, value_position)
    }
}

impl ColumnTerms<'_> {
    fn comparison(
        &self,
        column: Column,
        op: &str,
        raw: &str,
        position: usize,
    ) -> Result<Sql, FilterError> {
        let bad = |message: String| FilterError { position, message };
        let value = match column.kind {
            ColumnKind::Text => Value::Text(raw.to_owned()),
            ColumnKind::Enum => {
                Value::Text(raw.strip_prefix(column.prefix).unwrap_or(raw).to_owned())
            }
            ColumnKind::Int => Value::Int(match raw {
                "true" => 1,
                "false" => 0,
                _ => raw.parse().map_err(|_| {
                    let digits = raw.strip_prefix('-').unwrap_or(raw);
                    let reason = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                    {
                        "an integer within ±9223372036854775807 (64 bits)"
                    } else {
                        "an integer"
                    };
                    bad(format!("`{}` needs {reason}", column.field))
                })?,
            }),
            ColumnKind::Float => Value::Float(
                raw.parse()
                    .map_err(|_| bad(format!("`{}` needs a number", column.field)))?,
            ),
            ColumnKind::Time => Value::Int(
                parse_rfc3339_micros(raw)
                    .ok_or_else(|| bad(format!("`{}` needs an RFC 3339 time", column.field)))?,
            ),
        };
        let mut sql = Sql::new("");
        if op == ":" {
            if !matches!(column.kind, ColumnKind::Text | ColumnKind::Enum) {
                return Err(bad(format!(
                    "`:` (contains) applies to text fields, not `{}`",
                    column.field
                )));
            }
            let function = match self.backend {
                Backend::Postgres => "strpos",
                Backend::Sqlite => "instr",
            };
            sql.push(function)
                .push("(")
                .push(column.sql)
                .push(", ")
                .bind(value)
                .push(") > 0");
        } else {
            sql.push(column.sql)
                .push(" ")
                .push(op)
                .push(" ")
                .bind(value);
        }
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        Column::text("email"),
        Column::float("score"),
        Column::enumeration("stage"),
        Column::int("employees"),
    ];

    #[test]
    fn numbers_take_every_usual_syntax() {
        for (literal, value) in [
            ("42", 42.0),
            ("-0.5", -0.5),
            ("1e3", 1e3),
            ("1E-2", 1e-2),
            ("2.5e+2", 250.0),
            ("-1e308", -1e308),
            ("7.", 7.0),
        ] {
            let tokens = tokenize(&format!("score >= {literal}")).expect(literal);
            assert_eq!(tokens.len(), 3, "{literal}: {tokens:?}");
            let Token::Num(raw) = &tokens[2].1 else {
                panic!("{literal}: {tokens:?}")
            };
            assert_eq!(raw.parse::<f64>().expect("number"), value, "{literal}");
            compile(&format!("score >= {literal}"), COLUMNS, Backend::Sqlite)
                .unwrap_or_else(|e| panic!("{literal}: {e}"));
        }
        // An exponent needs digits: `30d` is a number then a word.
        assert_eq!(
            tokenize("30d").expect("tokens"),
            [(0, Token::Num("30".into())), (2, Token::Word("d".into()))]
        );
        let error = compile("employees > 99999999999999999999", COLUMNS, Backend::Sqlite)
            .expect_err("beyond 64 bits");
        assert!(error.message.contains("64 bits"), "{}", error.message);
        let error = compile("employees > 1.5", COLUMNS, Backend::Sqlite).expect_err("fraction");
        assert_eq!(error.message, "`employees` needs an integer");
        for literal in ["1e309", "-1e400", &"9".repeat(400)] {
            let error = tokenize(&format!("score >= {literal}")).expect_err(literal);
            assert_eq!(error.position, 9);
            assert!(error.message.contains("out of range"), "{}", error.message);
        }
    }

    #[test]
    fn limits_are_named_when_hit() {
        let deep = format!("{}score > 1{}", "(".repeat(40), ")".repeat(40));
        let error = compile(&deep, COLUMNS, Backend::Sqlite).expect_err("too deep");
        assert!(error.message.contains("32 levels"), "{}", error.message);
        let long = vec!["score > 1"; 200].join(" AND ");
        let error = compile(&long, COLUMNS, Backend::Sqlite).expect_err("too long");
        assert!(error.message.contains("512 tokens"), "{}", error.message);
    }

    #[test]
    fn compiles_with_bound_values() {
        let sql = compile(
            r#"stage = MQL AND (score >= 50 OR email : "@example.com")"#,
            COLUMNS,
            Backend::Sqlite,
        )
        .expect("parses")
        .expect("non-empty");
        assert_eq!(
            sql.text(),
            "((stage = $1 AND ((score >= $2) OR (instr(email, $3) > 0))))"
        );
        // AND binds tighter than OR, as in SQL and AIP-160.
        let sql = compile(
            "score > 1 OR score < 0 AND email = x",
            COLUMNS,
            Backend::Sqlite,
        )
        .expect("parses")
        .expect("non-empty");
        assert_eq!(sql.text(), "((score > $1) OR (score < $2 AND email = $3))");
    }

    #[test]
    fn metacharacters_stay_values() {
        let sql = compile(
            r#"email = "x'; DROP TABLE leads; --""#,
            COLUMNS,
            Backend::Postgres,
        )
        .expect("parses")
        .expect("non-empty");
        assert!(!sql.text().contains("DROP"));
    }

    #[test]
    fn errors_point_at_the_position() {
        let err = compile("score >= 5 AND nope = 1", COLUMNS, Backend::Sqlite)
            .expect_err("unknown field");
        assert_eq!(err.position, 15);
        let err = compile("score >= abc", COLUMNS, Backend::Sqlite).expect_err("not a number");
        assert_eq!(err.position, 9);
        let err = compile("(score > 1", COLUMNS, Backend::Sqlite).expect_err("unbalanced");
        assert_eq!(err.position, 10);
        let err = compile("email = \"open", COLUMNS, Backend::Sqlite).expect_err("unterminated");
        assert_eq!(err.position, 8);
    }

    #[test]
    fn segment_only_tokens_are_refused() {
        let err =
            compile("email ~ \"x\"", COLUMNS, Backend::Postgres).expect_err("no regex operator");
        assert_eq!(err.position, 6);
        let err = compile("email = a, score > 1", COLUMNS, Backend::Sqlite).expect_err("no commas");
        assert_eq!(err.position, 9);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let filter = format!("{}score > 1{}", "(".repeat(200), ")".repeat(200));
        assert!(compile(&filter, COLUMNS, Backend::Sqlite).is_err());
    }
}
