//! A small embedded migration runner that works through the `Any` driver on both engines.
//!
//! A migration is written once, in SQL both engines accept, with three tokens for the types that
//! differ: `{{BLOB}}` (BYTEA / BLOB), `{{DOUBLE}}` (DOUBLE PRECISION / REAL) and `{{SERIAL_PK}}`
//! (BIGSERIAL PRIMARY KEY / INTEGER PRIMARY KEY AUTOINCREMENT). A fourth token,
//! `{{RESOURCE_COLUMNS}}`, stands for the standard columns every resource table has
//! ([`RESOURCE_COLUMNS`]: `id`, `parent`, `data`, `version`, `create_time`, `update_time`,
//! `writer_revision`); a new resource table is written
//! `CREATE TABLE things ({{RESOURCE_COLUMNS}}, name TEXT NOT NULL, PRIMARY KEY (parent, id))`, its
//! own indexed columns after the token. Released migrations spell the columns out (and got
//! `writer_revision` from a later `ALTER TABLE`); they are never rewritten to use the token.
//! Applied versions are recorded in `kizuna_migrations`. On PostgreSQL an advisory lock keeps two
//! replicas (or a Job and a replica) from migrating at once.

use sqlx::Executor;

use crate::{Backend, Database, now_micros};

/// What `{{RESOURCE_COLUMNS}}` expands to (before the type tokens are rendered): the columns the
/// store reads and writes on every resource table (`kizuna_store::Table`), comma-separated,
/// without a trailing comma. The primary key, `PRIMARY KEY (parent, id)`, is for the table to
/// declare after its own columns.
pub const RESOURCE_COLUMNS: &str = "id TEXT NOT NULL, parent TEXT NOT NULL, data {{BLOB}} NOT NULL, \
     version BIGINT NOT NULL, create_time BIGINT NOT NULL, update_time BIGINT NOT NULL, \
     writer_revision BIGINT NOT NULL DEFAULT 0";

/// One schema change.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Increasing version number, unique across everything a service migrates.
    pub version: i64,
    /// Short description, recorded with the version.
    pub description: &'static str,
    /// SQL with the tokens described above (may hold several statements).
    pub sql: &'static str,
}

impl Migration {
    /// The migration's SQL for `backend`.
    pub fn render(&self, backend: Backend) -> String {
        let (blob, double, serial) = match backend {
            Backend::Postgres => ("BYTEA", "DOUBLE PRECISION", "BIGSERIAL PRIMARY KEY"),
            Backend::Sqlite => ("BLOB", "REAL", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        };
        self.sql
            .replace("{{RESOURCE_COLUMNS}}", RESOURCE_COLUMNS)
            .replace("{{BLOB}}", blob)
            .replace("{{DOUBLE}}", double)
            .replace("{{SERIAL_PK}}", serial)
    }
}

/// A migration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database rejected the migration's SQL.
    #[error("migration {version} ({description}) failed: {source}")]
    Apply {
        /// The failing version.
        version: i64,
        /// Its description.
        description: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The bookkeeping table could not be read or written.
    #[error("migration bookkeeping failed: {0}")]
    Bookkeeping(#[from] sqlx::Error),
}

const LOCK_KEY: i64 = 0x4b495a554e41; // "KIZUNA"

pub(crate) async fn run(db: &Database, migrations: &[Migration]) -> Result<usize, MigrationError> {
    let mut conn = db.pool().acquire().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    let result = apply(&mut conn, db.backend(), migrations).await;
    if db.backend() == Backend::Postgres {
        // Released on disconnect too; an error here only delays other migrators.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn apply(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    migrations: &[Migration],
) -> Result<usize, MigrationError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS kizuna_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM kizuna_migrations")
        .fetch_one(&mut *conn)
        .await?;
    let current = current.unwrap_or(0);
    if let Some(latest) = migrations.iter().map(|m| m.version).max()
        && current > latest
    {
        // A newer release migrated first (a rolling upgrade): migrations only ever add, so this
        // binary runs on the newer schema; rows it must not rewrite are guarded by revision.
        tracing::info!(
            database = current,
            binary = latest,
            "database schema is newer than this binary; nothing to apply"
        );
        return Ok(0);
    }
    let mut applied = 0;
    let mut pending: Vec<&Migration> = migrations.iter().filter(|m| m.version > current).collect();
    pending.sort_by_key(|m| m.version);
    for migration in pending {
        let sql = migration.render(backend);
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let fail = |source| MigrationError::Apply {
            version: migration.version,
            description: migration.description,
            source,
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        sqlx::query(
            "INSERT INTO kizuna_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            description = migration.description,
            "migration applied"
        );
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Row};

    use super::*;

    const THINGS: Migration = Migration {
        version: 9,
        description: "things",
        sql: "CREATE TEMP TABLE things (
    {{RESOURCE_COLUMNS}},
    score {{DOUBLE}} NOT NULL,
    PRIMARY KEY (parent, id)
);",
    };

    #[test]
    fn resource_columns_render_for_both_engines() {
        let columns = "id TEXT NOT NULL, parent TEXT NOT NULL, data {} NOT NULL, \
             version BIGINT NOT NULL, create_time BIGINT NOT NULL, update_time BIGINT NOT NULL, \
             writer_revision BIGINT NOT NULL DEFAULT 0";
        for (backend, blob, double) in [
            (Backend::Postgres, "BYTEA", "DOUBLE PRECISION"),
            (Backend::Sqlite, "BLOB", "REAL"),
        ] {
            assert_eq!(
                THINGS.render(backend),
                format!(
                    "CREATE TEMP TABLE things (\n    {},\n    score {double} NOT NULL,\n    \
                     PRIMARY KEY (parent, id)\n);",
                    columns.replace("{}", blob)
                ),
                "{backend:?}"
            );
        }
    }

    #[test]
    fn sql_without_the_token_renders_as_before() {
        let released = Migration {
            version: 2,
            description: "spelled out",
            sql: "CREATE TABLE t (id TEXT NOT NULL, data {{BLOB}} NOT NULL, s {{SERIAL_PK}});",
        };
        assert_eq!(
            released.render(Backend::Sqlite),
            "CREATE TABLE t (id TEXT NOT NULL, data BLOB NOT NULL, \
             s INTEGER PRIMARY KEY AUTOINCREMENT);"
        );
        assert_eq!(
            released.render(Backend::Postgres),
            "CREATE TABLE t (id TEXT NOT NULL, data BYTEA NOT NULL, s BIGSERIAL PRIMARY KEY);"
        );
    }

    /// Creates the table on a real engine and writes a row the way the store does, leaving
    /// `writer_revision` to its default.
    async fn a_table_from_the_token_holds_a_resource(url: &str, backend: Backend) {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(THINGS.render(backend)))
            .execute(&mut conn)
            .await
            .expect("create");
        sqlx::query(
            "INSERT INTO things (id, parent, data, version, create_time, update_time, score) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind("t1")
        .bind("")
        .bind(vec![1_u8, 2, 3])
        .bind(1_i64)
        .bind(10_i64)
        .bind(11_i64)
        .bind(0.5_f64)
        .execute(&mut conn)
        .await
        .expect("insert");
        let row = sqlx::query("SELECT data, version, writer_revision FROM things WHERE id = $1")
            .bind("t1")
            .fetch_one(&mut conn)
            .await
            .expect("select");
        assert_eq!(row.try_get::<Vec<u8>, _>(0).expect("data"), [1, 2, 3]);
        assert_eq!(row.try_get::<i64, _>(1).expect("version"), 1);
        assert_eq!(row.try_get::<i64, _>(2).expect("writer_revision"), 0);
        let twice = sqlx::query(
            "INSERT INTO things (id, parent, data, version, create_time, update_time, score) \
             VALUES ('t1', '', $1, 1, 1, 1, 0)",
        )
        .bind(vec![0_u8])
        .execute(&mut conn)
        .await;
        assert!(twice.is_err(), "(parent, id) is the primary key");
    }

    #[tokio::test]
    async fn a_table_from_the_token_holds_a_resource_on_sqlite() {
        a_table_from_the_token_holds_a_resource("sqlite::memory:", Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn a_table_from_the_token_holds_a_resource_on_postgres() {
        // A temporary table on the test server's admin database: nothing outlives the connection.
        let url = std::env::var("KIZUNA_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let required = std::env::var("KIZUNA_TEST_POSTGRES").is_ok_and(|v| v == "required");
        sqlx::any::install_default_drivers();
        if !required && sqlx::AnyConnection::connect(&url).await.is_err() {
            eprintln!("skipped: PostgreSQL at {url} cannot be reached");
            return;
        }
        a_table_from_the_token_holds_a_resource(&url, Backend::Postgres).await;
    }
}
