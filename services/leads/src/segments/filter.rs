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
    .ok_or_else(|| FilterError::at(0, "the filter is empty"))
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
            .ok_or_else(|| FilterError::at(cursor.here(), "expected a field"))?;
        if field == "activity" {
            return self.activity(cursor);
        }
        let kind = FIELDS
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| FilterError::at(position, format!("unknown field `{field}`")))?;
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
            return Err(FilterError::at(
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
                    return Err(FilterError::at(
                        op_position,
                        "`tags` takes only `:` (has tag)",
                    ));
                }
                if raw.is_empty() || raw.contains(char::is_whitespace) {
                    return Err(FilterError::at(
                        position,
                        "a tag is one word without spaces",
                    ));
                }
                sql.push(&self.contains("tags"))
                    .bind(format!(" {raw} "))
                    .push(") > 0");
            }
            Kind::Stage => {
                let short = raw.strip_prefix("LIFECYCLE_STAGE_").unwrap_or(raw);
                if op != "=" && op != "!=" {
                    return Err(FilterError::at(op_position, "`stage` takes `=` or `!=`"));
                }
                let full = format!("LIFECYCLE_STAGE_{short}");
                if LifecycleStage::from_str_name(&full)
                    .is_none_or(|s| s == LifecycleStage::Unspecified)
                {
                    return Err(FilterError::at(
                        position,
                        format!("`{raw}` is not a lifecycle stage"),
                    ));
                }
                sql.push(&format!("stage {op} ")).bind(short);
            }
            Kind::Score => {
                if op == ":" {
                    return Err(FilterError::at(
                        op_position,
                        "`score` is a number; `:` does not apply",
                    ));
                }
                let value: f64 = raw
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite())
                    .ok_or_else(|| FilterError::at(position, "`score` needs a number"))?;
                sql.push(&format!("score {op} ")).bind(value);
            }
            Kind::Grade => {
                if !matches!(raw, "A" | "B" | "C" | "D") {
                    return Err(FilterError::at(position, "`grade` is one of A, B, C, D"));
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
                    _ => return Err(FilterError::at(op_position, "`grade` does not take `:`")),
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
                    return Err(FilterError::at(
                        op_position,
                        format!("`{field}` does not take `:`"),
                    ));
                }
                let micros = parse_rfc3339_micros(raw).ok_or_else(|| {
                    FilterError::at(position, format!("`{field}` needs an RFC 3339 time"))
                })?;
                sql.push(&format!("{field} {op} ")).bind(micros);
            }
        }
        Ok(sql)
    }

    fn activity(&self, cursor: &mut Cursor) -> Result<Sql, FilterError> {
        if cursor.peek() != Some(&Token::LParen) {
            return Err(FilterError::at(
                cursor.here(),
                "expected `(` after `activity`",
            ));
        }
        cursor.advance();
        let mut sql = Sql::new("SELECT 1 FROM activities a WHERE a.parent = 'leads/' || leads.id");
        let mut seen: Vec<String> = Vec::new();
        if cursor.peek() == Some(&Token::RParen) {
            cursor.advance();
        } else {
            loop {
                let position = cursor.here();
                let Some(Token::Word(arg)) = cursor.peek().cloned() else {
                    return Err(FilterError::at(
                        position,
                        "expected `kind`, `url` or `within`",
                    ));
                };
                if seen.contains(&arg) {
                    return Err(FilterError::at(position, format!("`{arg}` is given twice")));
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
                            return Err(FilterError::at(
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
                            FilterError::at(
                                value_position,
                                "`within` is like \"7d\", \"12h\" or \"30m\"",
                            )
                        })?;
                        sql.push(" AND a.occur_time >= ")
                            .bind(self.now_micros.saturating_sub(window));
                    }
                    ("kind" | "within", _) => {
                        return Err(FilterError::at(op_position, format!("`{arg}` takes `=`")));
                    }
                    ("url", _) => {
                        return Err(FilterError::at(op_position, "`url` takes `~` (contains)"));
                    }
                    _ => {
                        return Err(FilterError::at(
                            position,
                            "expected `kind`, `url` or `within`",
                        ));
                    }
                }
                seen.push(arg);
                match cursor.peek() {
                    Some(Token::Comma) => cursor.advance(),
                    Some(Token::RParen) => {
                        cursor.advance();
                        break;
                    }
                    _ => return Err(FilterError::at(cursor.here(), "expected `,` or `)`")),
                }
            }
        }
        let (op_position, op) = cursor.op()?;
        if matches!(op, ":" | "~") {
            return Err(FilterError::at(
                op_position,
                "compare the activity count with = != < <= > >=",
            ));
        }
        let (position, raw) = cursor.value()?;
        let count: i64 = raw.parse().map_err(|_| {
            FilterError::at(position, "the activity count is compared with an integer")
        })?;
        // Counting up to count + 1 decides every comparison with `count` (min(n, count + 1)
        // compares as n does), so a lead with thousands of matching activities costs no more
        // than count + 1 index entries.
        let mut counted = Sql::new("(SELECT COUNT(*) FROM (");
        counted
            .append(sql)
            .push(" LIMIT ")
            .bind(count.saturating_add(1).max(0))
            .push(") counted)")
            .push(&format!(" {op} "))
            .bind(count);
        Ok(counted)
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
            "(((SELECT COUNT(*) FROM (SELECT 1 FROM activities a WHERE a.parent = 'leads/' || \
             leads.id AND a.kind = $1 AND strpos(a.url, $2) > 0 AND a.occur_time >= $3 LIMIT $4) \
             counted) >= $5))"
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

    /// Random filters from the grammar compile; the same filters with a character deleted or a
    /// stray piece inserted never panic, an error points inside the filter (or at its end), and
    /// a success still binds the quoted values rather than splicing them.
    #[test]
    fn random_filters_compile_or_fail_cleanly() {
        const STRAY: &[&str] = &[
            "(", ")", ",", "=", "~", ":", "\"", "'", ";", "--", "%", "_", "Ａ", "\\", "NOT", "AND",
            "OR", "activity", "-", "1e999",
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        fn pick<'a>(next: &mut impl FnMut(usize) -> usize, from: &[&'a str]) -> &'a str {
            from[next(from.len())]
        }
        fn expr(next: &mut impl FnMut(usize) -> usize, depth: usize) -> String {
            let ops = ["=", "!=", "<", "<=", ">", ">="];
            match if depth > 3 { 0 } else { next(5) } {
                0 => match next(6) {
                    0 => format!("score {} {}", pick(next, &ops), next(200)),
                    1 => format!(
                        "grade {} \"{}\"",
                        pick(next, &ops),
                        pick(next, &["A", "B", "C", "D"])
                    ),
                    2 => format!(
                        "stage {} {}",
                        pick(next, &["=", "!="]),
                        pick(next, &["MQL", "LEAD", "LIFECYCLE_STAGE_SQL"])
                    ),
                    3 => format!("tags : \"{}\"", pick(next, &["vip", "x'y", "DROP"])),
                    4 => format!(
                        "email : \"{}\"",
                        pick(next, &["x'y", "%_", "DROP TABLE leads; --"])
                    ),
                    _ => format!(
                        "activity(kind = \"{}\", url ~ \"{}\", within = \"{}\") {} {}",
                        pick(next, &["PAGE_VIEW", "EMAIL_CLICK"]),
                        pick(next, &["/pricing", "x'y"]),
                        pick(next, &["7d", "12h", "30m"]),
                        pick(next, &ops),
                        next(5)
                    ),
                },
                1 => format!("{} AND {}", expr(next, depth + 1), expr(next, depth + 1)),
                2 => format!("{} OR {}", expr(next, depth + 1), expr(next, depth + 1)),
                3 => format!("NOT {}", expr(next, depth + 1)),
                _ => format!("({})", expr(next, depth + 1)),
            }
        }
        let columns = [
            kizuna_store::Column::text("email"),
            kizuna_store::Column::float("score"),
        ];
        for _ in 0..2_000 {
            let valid = expr(&mut next, 0);
            for backend in [Backend::Sqlite, Backend::Postgres] {
                let sql = compile(&valid, backend, 0).unwrap_or_else(|e| panic!("{valid}: {e:?}"));
                assert!(
                    !sql.text().contains("x'y") && !sql.text().contains("DROP"),
                    "{valid}"
                );
            }
            let mut chars: Vec<char> = valid.chars().collect();
            let at = next(chars.len() + 1);
            if next(2) == 0 && at < chars.len() {
                chars.remove(at);
            } else {
                let stray: Vec<char> = pick(&mut next, STRAY).chars().collect();
                chars.splice(at..at, stray);
            }
            let mutated: String = chars.iter().collect();
            for backend in [Backend::Sqlite, Backend::Postgres] {
                match compile(&mutated, backend, 0) {
                    Ok(sql) => assert!(
                        !sql.text().contains("x'y") && !sql.text().contains("DROP"),
                        "{mutated}"
                    ),
                    Err(e) => assert!(e.position <= chars.len(), "{mutated}: {e:?}"),
                }
                if let Err(e) = kizuna_store::filter::compile(&mutated, &columns, backend) {
                    assert!(e.position <= chars.len(), "{mutated}: {e:?}");
                }
            }
        }
    }
}
