//! Layered, typed settings shared by every Kizuna service.
//!
//! Sources, later ones winning: built-in defaults, an optional TOML file (`KIZUNA_CONFIG` or an
//! explicit path), then environment variables `KIZUNA__<SECTION>__<KEY>` (for example
//! `KIZUNA__DATABASE__URL`). Secrets are wrapped in [`Secret`] so they never print.
//! [`Settings::validate`] names the offending setting so a bad deployment fails at start-up.

use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// The environment variable that names an optional TOML settings file.
pub const CONFIG_FILE_ENV: &str = "KIZUNA_CONFIG";

/// A string that must never appear in logs or debug output.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

/// All settings of one service process.
#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    /// gRPC listener and request limits.
    pub server: ServerSettings,
    /// The service's own database.
    pub database: DatabaseSettings,
    /// Bearer-token verification.
    pub auth: AuthSettings,
    /// Logs and OpenTelemetry export.
    pub telemetry: TelemetrySettings,
    /// Where the gateway finds the domain services (ignored by the others).
    pub gateway: GatewaySettings,
    /// Background work of the leads service (ignored by the others).
    pub leads: LeadsSettings,
}

/// `server.*`
#[derive(Clone, Debug, Deserialize)]
pub struct ServerSettings {
    /// Address to bind, e.g. `0.0.0.0` in a container or `127.0.0.1` on a laptop.
    pub host: String,
    /// gRPC port; `0` picks a free port (tests).
    pub port: u16,
    /// Seconds a SIGTERM/SIGINT drain may take before in-flight calls are cut.
    pub grace_period_secs: u64,
    /// Largest accepted request message, in bytes.
    pub max_request_bytes: usize,
    /// Calls one connection may have in flight at once.
    pub concurrency_limit_per_connection: usize,
    /// Seconds between HTTP/2 PINGs on an idle connection, so a lost peer is noticed.
    pub keepalive_interval_secs: u64,
    /// Seconds to wait for a PING's answer before the connection is closed.
    pub keepalive_timeout_secs: u64,
    /// Seconds a client connection may live before the server asks it to reconnect (GOAWAY),
    /// so long-lived clients spread over replicas added since; `0` keeps connections forever.
    pub max_connection_age_secs: u64,
}

/// `database.*`
#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user:pass@host/db` or `sqlite://path/file.db`.
    pub url: Secret,
    /// URL `kizuna migrate` connects with instead of `url`, e.g. a role that owns the schema
    /// while the service's own role has no DDL rights; empty: `migrate` uses `url`.
    pub migration_url: Secret,
    /// Pool size.
    pub max_connections: u32,
    /// Seconds to wait for a pooled connection before failing a call with UNAVAILABLE.
    pub acquire_timeout_secs: u64,
    /// Run the embedded migrations when the service starts (`false` where a Job migrates).
    pub migrate_on_start: bool,
    /// Seconds between health probes of the database.
    pub health_interval_secs: u64,
}

/// `auth.*`
#[derive(Clone, Debug, Deserialize)]
pub struct AuthSettings {
    /// HS256 signing key for bearer tokens; at least 32 bytes.
    pub signing_key: Secret,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
}

/// `telemetry.*`
#[derive(Clone, Debug, Deserialize)]
pub struct TelemetrySettings {
    /// `json` (one object per line, with trace ids) or `pretty`.
    pub log_format: LogFormat,
    /// `tracing` env-filter directive, e.g. `info,kizuna_leads=debug`; `RUST_LOG` overrides it.
    pub log_level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// `gateway.*`
#[derive(Clone, Debug, Deserialize)]
pub struct GatewaySettings {
    /// Base URL of the leads service, e.g. `http://leads:50051`.
    pub leads_url: String,
    /// Base URL of the deals service.
    pub deals_url: String,
    /// Base URL of the accounts service.
    pub accounts_url: String,
    /// Deadline, in milliseconds, for one call to a domain service.
    pub upstream_timeout_ms: u64,
}

/// `leads.*`
#[derive(Clone, Debug, Deserialize)]
pub struct LeadsSettings {
    /// How often pending score changes are announced as one `lead.score_changed` event.
    pub score_flush_interval_ms: u64,
    /// Leads rescored per transaction by a rescoring job.
    pub rescoring_chunk_size: u32,
    /// Pause between two chunks of a rescoring job, to bound its load on the database.
    pub rescoring_pause_ms: u64,
}

/// A setting is missing or wrong; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A source could not be read or a value has the wrong type.
    #[error("settings: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is present but unusable.
    #[error("setting `{key}` is invalid: {reason}")]
    Invalid {
        /// Dotted setting name, e.g. `database.url`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Built-in defaults, written as TOML so they double as documentation.
pub const DEFAULTS: &str = r#"
[server]
host = "0.0.0.0"
port = 50051
grace_period_secs = 20
max_request_bytes = 4194304
concurrency_limit_per_connection = 256
keepalive_interval_secs = 10
keepalive_timeout_secs = 5
max_connection_age_secs = 60

[database]
url = ""
migration_url = ""
max_connections = 10
acquire_timeout_secs = 5
migrate_on_start = true
health_interval_secs = 1

[auth]
signing_key = ""
issuer = "kizuna"
audience = "kizuna"

[telemetry]
log_format = "json"
log_level = "info"

[gateway]
leads_url = "http://127.0.0.1:50051"
deals_url = "http://127.0.0.1:50052"
accounts_url = "http://127.0.0.1:50053"
upstream_timeout_ms = 3000

[leads]
score_flush_interval_ms = 1000
rescoring_chunk_size = 500
rescoring_pause_ms = 0
"#;

impl Settings {
    /// Loads defaults, then `file` (or the file named by `KIZUNA_CONFIG`), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let file: Option<PathBuf> = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from));
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let settings: Settings = builder
            .add_source(
                Environment::with_prefix("KIZUNA")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        Ok(settings)
    }

    /// Checks the values that serde cannot: URLs, key length, limits.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &'static str, reason: &str| {
            Err(SettingsError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        check_database_url("database.url", &self.database.url)?;
        if !self.database.migration_url.is_empty() {
            check_database_url("database.migration_url", &self.database.migration_url)?;
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.database.health_interval_secs == 0 {
            return invalid("database.health_interval_secs", "must be at least 1");
        }
        if self.auth.signing_key.expose().len() < 32 {
            return invalid("auth.signing_key", "must be at least 32 bytes");
        }
        if self.server.max_request_bytes < 1024 {
            return invalid("server.max_request_bytes", "must be at least 1024");
        }
        if self.server.concurrency_limit_per_connection == 0 {
            return invalid(
                "server.concurrency_limit_per_connection",
                "must be at least 1",
            );
        }
        if self.server.keepalive_interval_secs == 0 {
            return invalid("server.keepalive_interval_secs", "must be at least 1");
        }
        if self.server.keepalive_timeout_secs == 0 {
            return invalid("server.keepalive_timeout_secs", "must be at least 1");
        }
        if self.server.host.parse::<std::net::IpAddr>().is_err() {
            return invalid(
                "server.host",
                "must be an IP address such as 0.0.0.0 or 127.0.0.1",
            );
        }
        if self.leads.score_flush_interval_ms == 0 {
            return invalid("leads.score_flush_interval_ms", "must be at least 1");
        }
        if !(1..=10_000).contains(&self.leads.rescoring_chunk_size) {
            return invalid("leads.rescoring_chunk_size", "must be between 1 and 10000");
        }
        if self.gateway.upstream_timeout_ms == 0 {
            return invalid("gateway.upstream_timeout_ms", "must be at least 1");
        }
        for (key, value) in [
            ("gateway.leads_url", &self.gateway.leads_url),
            ("gateway.deals_url", &self.gateway.deals_url),
            ("gateway.accounts_url", &self.gateway.accounts_url),
        ] {
            let urls: Vec<&str> = value.split(',').map(str::trim).collect();
            if urls
                .iter()
                .any(|url| !(url.starts_with("http://") || url.starts_with("https://")))
            {
                return invalid(
                    key,
                    "must be an http:// or https:// URL, or a comma-separated list of them",
                );
            }
        }
        Ok(())
    }

    /// The URL `kizuna migrate` connects with: `database.migration_url` when set, else
    /// `database.url`.
    pub fn migration_url(&self) -> &Secret {
        if self.database.migration_url.is_empty() {
            &self.database.url
        } else {
            &self.database.migration_url
        }
    }

    /// Checks what `kizuna migrate` needs: a usable migration URL. The signing key, the listener
    /// and the gateway's upstreams are not used by a migration and are not required.
    pub fn validate_for_migration(&self) -> Result<(), SettingsError> {
        if self.database.migration_url.is_empty() {
            check_database_url("database.url", &self.database.url)
        } else {
            check_database_url("database.migration_url", &self.database.migration_url)
        }
    }
}

/// `key` holds a PostgreSQL or SQLite URL.
fn check_database_url(key: &'static str, url: &Secret) -> Result<(), SettingsError> {
    let url = url.expose();
    let reason = if url.is_empty() {
        "is required (postgres://... or sqlite://...)"
    } else if !(url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.starts_with("sqlite:"))
    {
        "must start with postgres://, postgresql:// or sqlite:"
    } else {
        return Ok(());
    };
    Err(SettingsError::Invalid {
        key,
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_secret_is_redacted() {
        let settings = Settings::load(None).expect("defaults load");
        assert_eq!(settings.server.port, 50051);
        assert_eq!(settings.telemetry.log_format, LogFormat::Json);
        let printed = format!("{:?}", Secret::new("hunter2-hunter2"));
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn file_overrides_defaults_and_validate_names_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kizuna.toml");
        std::fs::write(
            &path,
            "[database]\nurl = \"mysql://nope\"\n[auth]\nsigning_key = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .expect("write");
        let settings = Settings::load(Some(&path)).expect("load");
        let err = settings.validate().expect_err("mysql is not supported");
        assert!(err.to_string().contains("database.url"), "{err}");
    }

    fn valid() -> Settings {
        let mut settings = Settings::load(None).expect("defaults load");
        settings.database.url = Secret::new("sqlite://x.db");
        settings.auth.signing_key = Secret::new("0123456789abcdef0123456789abcdef");
        settings.validate().expect("valid");
        settings
    }

    fn invalid_key(settings: &Settings) -> String {
        match settings.validate() {
            Err(SettingsError::Invalid { key, .. }) => key.to_owned(),
            other => panic!("expected an invalid setting, got {other:?}"),
        }
    }

    #[test]
    fn keepalive_needs_positive_periods_and_connection_age_may_be_off() {
        let mut settings = valid();
        settings.server.max_connection_age_secs = 0;
        settings.validate().expect("age 0 keeps connections");
        settings.server.keepalive_interval_secs = 0;
        assert_eq!(invalid_key(&settings), "server.keepalive_interval_secs");
        let mut settings = valid();
        settings.server.keepalive_timeout_secs = 0;
        assert_eq!(invalid_key(&settings), "server.keepalive_timeout_secs");
    }

    #[test]
    fn upstream_urls_may_be_a_list_of_urls() {
        let mut settings = valid();
        settings.gateway.leads_url = "http://a:1, http://b:1,https://c:1".into();
        settings.validate().expect("a list of URLs");
        settings.gateway.leads_url = "http://a:1, b:1".into();
        assert_eq!(invalid_key(&settings), "gateway.leads_url");
        settings.gateway.leads_url = "http://a:1,".into();
        assert_eq!(invalid_key(&settings), "gateway.leads_url");
    }

    #[test]
    fn short_signing_key_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kizuna.toml");
        std::fs::write(
            &path,
            "[database]\nurl = \"sqlite://x.db\"\n[auth]\nsigning_key = \"short\"\n",
        )
        .expect("write");
        let err = Settings::load(Some(&path))
            .expect("load")
            .validate()
            .expect_err("short key");
        assert!(err.to_string().contains("auth.signing_key"), "{err}");
    }

    #[test]
    fn migration_needs_a_database_url_but_no_signing_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kizuna.toml");
        std::fs::write(&path, "[database]\nurl = \"sqlite://x.db\"\n").expect("write");
        let settings = Settings::load(Some(&path)).expect("load");
        settings
            .validate_for_migration()
            .expect("no signing key needed to migrate");
        assert_eq!(settings.migration_url().expose(), "sqlite://x.db");
        assert!(settings.validate().is_err(), "serving still needs the key");

        std::fs::write(
            &path,
            "[database]\nurl = \"\"\nmigration_url = \"postgres://owner@db/leads\"\n",
        )
        .expect("write");
        let settings = Settings::load(Some(&path)).expect("load");
        settings
            .validate_for_migration()
            .expect("the migration URL alone is enough");
        assert_eq!(
            settings.migration_url().expose(),
            "postgres://owner@db/leads"
        );

        std::fs::write(&path, "[database]\nmigration_url = \"mysql://db/leads\"\n").expect("write");
        let err = Settings::load(Some(&path))
            .expect("load")
            .validate_for_migration()
            .expect_err("mysql is not supported");
        assert!(err.to_string().contains("database.migration_url"), "{err}");
    }
}
