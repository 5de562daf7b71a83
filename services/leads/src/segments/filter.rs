//! The segment filter language over leads, compiled to a SQL condition on the `leads` table.
//!
//! Grammar: `expr := and (OR and)*`, `and := unary ([AND] unary)*`, `unary := NOT unary |
//! primary`, `primary := '(' expr ')' | activity | FIELD OP VALUE`, `activity := 'activity' '('
//! [arg (',' arg)*] ')' OP INTEGER` with `arg := kind = VALUE | url ~ STRING | within = DURATION`.
//! Every value is bound; substring matches use `strpos`/`instr`, never `LIKE`. Errors name the
//! character position (0-based). The boolean structure, nesting and token limits are the store's
//! filter parser ([`kizuna_store::filter::parse`]); this module compiles the terms.

use kizuna_db::Backend;
use kizuna_proto::leads::ActivityKind;
use kizuna_proto::types::LifecycleStage;
use kizuna_store::Sql;
use kizuna_store::filter::{Cursor, FilterError, Terms, Token};
use kizuna_store::time::parse_rfc3339_micros;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Stage,
    Score,
    Grade,
    Time,
    Tags,
}

const FIELDS: &[(&str, Kind)] = &[
    ("email", Kind::Text),
    ("company", Kind::Text),
    ("industry", Kind::Text),
    ("country_code", Kind::Text),
    ("source", Kind::Text),
    ("campaign", Kind::Text),
    ("utm_source", Kind::Text),
    ("utm_campaign", Kind::Text),
    ("owner", Kind::Text),
    ("stage", Kind::Stage),
    ("score", Kind::Score),
    ("grade", Kind::Grade),
    ("create_time", Kind::Time),
    ("update_time", Kind::Time),
    ("tags", Kind::Tags),
];

fn err(position: usize, message: impl Into<String>) -> FilterError {
    FilterError::at(position, message)
}

/// Compiles a segment filter to a SQL condition over the `leads` table. `now_micros` is the
/// reference time of `within` windows.
pub fn compile(filter: &str, backend: Backend, now_micros: i64) -> Result<Sql, FilterError> {
    kizuna_store::filter::parse(
        filter,
        &mut SegmentTerms {
            backend,
            now_micros,
        },
    )?
    .ok_or_else(|| err(0, "the filter is empty"))
}

/// The terms of the segment language: lead fields, tags, and `activity(...)` counts.
struct SegmentTerms {
    backend: Backend,
    now_micros: i64,
}

impl Terms for SegmentTerms {
    fn term(&mut self, cursor: &mut Cursor) -> Result<Sql, FilterError> {
        let (position, field) = cursor
            .word()
            .ok_or_else(|| err(cursor.here(), "expected a field"))?;
        if field == "activity" {
            return self.activity(cursor);
        }
        let kind = FIELDS
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| err(position, format!("unknown field `{field}`")))?;
        let (op_position, op) = cursor.op()?;
        let (value_position, raw) = cursor.value()?;
        self.comparison(&field, kind, op, op_position, &raw, value_position)
    }
}

impl SegmentTerms {
    fn contains(&self, column: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("strpos({column}, "),
            Backend::Sqlite => format!("instr({column}, "),
        }
    }

    fn comparison(
        &self,
        field: &str,
        kind: Kind,
        op: &'static str,
        op_position: usize,
        raw: &str,
        position: usize,
    ) -> Result<Sql, FilterError> {
        if op == "~" {
            return Err(err(
                op_position,
                "`~` applies only to `url` inside activity(...)",
            ));
        }
        let mut sql = Sql::new("");
        match kind {
            Kind::Text => {
                if op == ":" {
                    sql.push(&self.contains(field)).bind(raw).push(") > 0");
                } else {
                    sql.push(&format!("{field} {op} ")).bind(raw);
                }
            }
            Kind::Tags => {
                if op != ":" {
                    return Err(err(op_position, "`tags` takes only `:` (has tag)"));
                }
                if raw.is_empty() || raw.contains(char::is_whitespace) {
                    return Err(err(position, "a tag is one word without spaces"));
                }
                sql.push(&self.contains("tags"))
                    .bind(format!(" {raw} "))
                    .push(") > 0");
            }
            Kind::Stage => {
                let short = raw.strip_prefix("LIFECYCLE_STAGE_").unwrap_or(raw);
                if op != "=" && op != "!=" {
                    return Err(err(op_position, "`stage` takes `=` or `!=`"));
                }
                let full = format!("LIFECYCLE_STAGE_{short}");
                if LifecycleStage::from_str_name(&full)
                    .is_none_or(|s| s == LifecycleStage::Unspecified)
                {
                    return Err(err(position, format!("`{raw}` is not a lifecycle stage")));
                }
                sql.push(&format!("stage {op} ")).bind(short);
            }
            Kind::Score => {
                if op == ":" {
                    return Err(err(op_position, "`score` is a number; `:` does not apply"));
                }
                let value: f64 = raw
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite())
                    .ok_or_else(|| err(position, "`score` needs a number"))?;
                sql.push(&format!("score {op} ")).bind(value);
            }
            Kind::Grade => {
                if !matches!(raw, "A" | "B" | "C" | "D") {
                    return Err(err(position, "`grade` is one of A, B, C, D"));
                }
                // A is best and sorts first: "better or equal" is `<=` on the letters, and
                // leads without a grade (empty) never match an ordering comparison.
                let (sql_op, graded) = match op {
                    "=" => ("=", false),
                    "!=" => ("!=", false),
                    ">=" => ("<=", true),
                    ">" => ("<", true),
                    "<=" => (">=", true),
                    "<" => (">", true),
                    _ => return Err(err(op_position, "`grade` does not take `:`")),
                };
                if graded {
                    sql.push("grade <> '' AND ");
                }
                sql.push(&format!("grade {sql_op} ")).bind(raw);
                sql = {
                    let mut wrapped = Sql::new("(");
                    wrapped.append(sql);
                    wrapped.push(")");
                    wrapped
                };
            }
            Kind::Time => {
                if op == ":" {
                    return Err(err(op_position, format!("`{field}` does not take `:`")));
                }
                let micros = parse_rfc3339_micros(raw)
                    .ok_or_else(|| err(position, format!("`{field}` needs an RFC 3339 time")))?;
                sql.push(&format!("{field} {op} ")).bind(micros);
            }
        }
        Ok(sql)
    }

    fn activity(&self, cursor: &mut Cursor) -> Result<Sql, FilterError> {
        if cursor.peek() != Some(&Token::LParen) {
            return Err(err(cursor.here(), "expected `(` after `activity`"));
        }
        cursor.advance();
        let mut sql =
            Sql::new("(SELECT COUNT(*) FROM activities a WHERE a.parent = 'leads/' || leads.id");
        let mut seen: Vec<String> = Vec::new();
        if cursor.peek() == Some(&Token::RParen) {
            cursor.advance();
        } else {
            loop {
                let position = cursor.here();
                let Some(Token::Word(arg)) = cursor.peek().cloned() else {
                    return Err(err(position, "expected `kind`, `url` or `within`"));
                };
                if seen.contains(&arg) {
                    return Err(err(position, format!("`{arg}` is given twice")));
                }
                cursor.advance();
                let (op_position, op) = cursor.op()?;
                let (value_position, raw) = cursor.value()?;
                match (arg.as_str(), op) {
                    ("kind", "=") => {
                        let full = if raw.starts_with("ACTIVITY_KIND_") {
                            raw.clone()
                        } else {
                            format!("ACTIVITY_KIND_{raw}")
                        };
                        if ActivityKind::from_str_name(&full).is_none()
                            || full == "ACTIVITY_KIND_UNSPECIFIED"
                        {
                            return Err(err(
                                value_position,
                                format!("`{raw}` is not an activity kind"),
                            ));
                        }
                        let short = full.trim_start_matches("ACTIVITY_KIND_").to_owned();
                        sql.push(" AND a.kind = ").bind(short);
                    }
                    ("url", "~") => {
                        sql.push(" AND ")
                            .push(&self.contains("a.url"))
                            .bind(raw)
                            .push(") > 0");
                    }
                    ("within", "=") => {
                        let window = parse_window(&raw).ok_or_else(|| {
                            err(
                                value_position,
                                "`within` is like \"7d\", \"12h\" or \"30m\"",
                            )
                        })?;
                        sql.push(" AND a.occur_time >= ")
                            .bind(self.now_micros.saturating_sub(window));
                    }
                    ("kind" | "within", _) => {
                        return Err(err(op_position, format!("`{arg}` takes `=`")));
                    }
                    ("url", _) => return Err(err(op_position, "`url` takes `~` (contains)")),
                    _ => {
                        return Err(err(position, "expected `kind`, `url` or `within`"));
                    }
                }
                seen.push(arg);
                match cursor.peek() {
                    Some(Token::Comma) => cursor.advance(),
                    Some(Token::RParen) => {
                        cursor.advance();
                        break;
                    }
                    _ => return Err(err(cursor.here(), "expected `,` or `)`")),
                }
            }
        }
        sql.push(")");
        let (op_position, op) = cursor.op()?;
        if matches!(op, ":" | "~") {
            return Err(err(
                op_position,
                "compare the activity count with = != < <= > >=",
            ));
        }
        let (position, raw) = cursor.value()?;
        let count: i64 = raw
            .parse()
            .map_err(|_| err(position, "the activity count is compared with an integer"))?;
        sql.push(&format!(" {op} ")).bind(count);
        Ok(sql)
    }
}

/// A `within` window in microseconds: a positive integer followed by `d`, `h` or `m`.
fn parse_window(raw: &str) -> Option<i64> {
    let unit = raw.chars().last()?;
    let n: i64 = raw[..raw.len() - unit.len_utf8()].parse().ok()?;
    let per: i64 = match unit {
        'd' => 86_400_000_000,
        'h' => 3_600_000_000,
        'm' => 60_000_000,
        _ => return None,
    };
    (n > 0).then(|| n.checked_mul(per)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_predicate_binds_every_value() {
        let sql = compile(
            r#"activity(kind = "PAGE_VIEW", url ~ "/pricing", within = "7d") >= 2"#,
            Backend::Postgres,
            1_000_000_000_000,
        )
        .expect("compiles");
        assert_eq!(
            sql.text(),
            "(((SELECT COUNT(*) FROM activities a WHERE a.parent = 'leads/' || leads.id \
             AND a.kind = $1 AND strpos(a.url, $2) > 0 AND a.occur_time >= $3) >= $4))"
        );
    }

    #[test]
    fn grades_and_tags() {
        let sql = compile(r#"grade >= B AND tags : "vip""#, Backend::Sqlite, 0).expect("ok");
        assert_eq!(
            sql.text(),
            "(((grade <> '' AND grade <= $1) AND instr(tags, $2) > 0))"
        );
    }

    #[test]
    fn errors_point_at_the_position() {
        assert_eq!(
            compile("score >= 5 AND nope = 1", Backend::Sqlite, 0)
                .expect_err("unknown")
                .position,
            15
        );
        assert_eq!(
            compile(r#"activity(kind = "NOPE") > 1"#, Backend::Sqlite, 0)
                .expect_err("kind")
                .position,
            16
        );
        assert_eq!(
            compile(r#"activity(within = "7x") > 1"#, Backend::Sqlite, 0)
                .expect_err("window")
                .position,
            18
        );
        assert_eq!(
            compile("stage = MQX", Backend::Sqlite, 0)
                .expect_err("stage")
                .position,
            8
        );
        assert!(compile("stage = LIFECYCLE_STAGE_MQL", Backend::Sqlite, 0).is_ok());
        assert!(compile(&"NOT ".repeat(100), Backend::Sqlite, 0).is_err());
    }
}
