//! A small embedded migration runner that works through the `Any` driver on both engines.
//!
//! A migration is written once, in SQL both engines accept, with three tokens for the types that
//! differ: `{{BLOB}}` (BYTEA / BLOB), `{{DOUBLE}}` (DOUBLE PRECISION / REAL) and `{{SERIAL_PK}}`
//! (BIGSERIAL PRIMARY KEY / INTEGER PRIMARY KEY AUTOINCREMENT). Applied versions are recorded in
//! `kizuna_migrations`. On PostgreSQL an advisory lock keeps two replicas (or a Job and a
//! replica) from migrating at once.

use sqlx::Executor;

use crate::{Backend, Database, now_micros};

/// One schema change.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Increasing version number, unique across everything a service migrates.
    pub version: i64,
    /// Short description, recorded with the version.
    pub description: &'static str,
    /// SQL with the type tokens described above (may hold several statements).
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
