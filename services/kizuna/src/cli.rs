//! Command-line parsing and the four commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};
use kizuna_auth::Authenticator;
use kizuna_server::StartError;
use kizuna_settings::{LogFormat, Secret, Settings};

/// Exit code for a configuration error (the setting is named in the message).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "kizuna",
    version,
    about = "Kizuna: MA -> SFA -> CRM as gRPC services"
)]
struct Cli {
    /// A TOML settings file (also `KIZUNA_CONFIG`); `KIZUNA__...` variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run all four services in one process with SQLite files (laptop, demo, small team).
    Up {
        /// Folder for the SQLite files and the local signing key.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Gateway port; leads, deals and accounts take the next three (0: pick free ports).
        #[arg(long, default_value_t = 50050)]
        port: u16,
    },
    /// Run one service (the Kubernetes entry point); settings come from file and environment.
    Serve {
        /// Which service.
        service: ServiceName,
    },
    /// Apply one service's database migrations and exit (uses `database.migration_url` when
    /// set, else `database.url`; needs no signing key).
    Migrate {
        /// Which service.
        service: ServiceName,
    },
    /// Ask a running service for its gRPC health (grpc.health.v1); exit 0 when SERVING, 1
    /// otherwise (for compose health checks and for operators).
    Health {
        /// Address of the service; default 127.0.0.1 and the configured `server.port`.
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
        /// Health service to check: "" (the database is reachable), "liveness" (the process is
        /// up), or a gRPC service name.
        #[arg(long, value_name = "NAME", default_value = "")]
        service: String,
        /// Seconds to wait for the answer, connecting included.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Print a bearer token signed with the configured key (or the `up` key in --data-dir).
    Token {
        /// Space- or comma-separated scopes, e.g. "leads:read deals:write" or "admin".
        #[arg(long, default_value = "admin")]
        scopes: String,
        /// The token's subject (who is calling).
        #[arg(long, default_value = "admin")]
        subject: String,
        /// Validity in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
        /// Folder holding the key created by `kizuna up`, used when no key is configured.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

/// The services one process can run.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum ServiceName {
    Leads,
    Deals,
    Accounts,
    Gateway,
}

impl ServiceName {
    fn as_str(self) -> &'static str {
        match self {
            ServiceName::Leads => "leads",
            ServiceName::Deals => "deals",
            ServiceName::Accounts => "accounts",
            ServiceName::Gateway => "gateway",
        }
    }
}

/// Parses the command line and runs the command.
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => return config_error(&error),
    };
    match cli.command {
        Command::Up {
            data_dir,
            host,
            port,
        } => up(settings, &data_dir, &host, port).await,
        Command::Serve { service } => serve(settings, service).await,
        Command::Migrate { service } => migrate(settings, service).await,
        Command::Health {
            addr,
            service,
            timeout_secs,
        } => health(&settings, addr, &service, timeout_secs).await,
        Command::Token {
            scopes,
            subject,
            ttl_hours,
            data_dir,
        } => token(settings, &scopes, &subject, ttl_hours, &data_dir),
    }
}

fn config_error(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("kizuna: configuration error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn failure(what: &str, error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(error = %error, "{what}");
    eprintln!("kizuna: {what}: {error}");
    ExitCode::FAILURE
}

async fn serve(settings: Settings, service: ServiceName) -> ExitCode {
    if let Err(error) = settings.validate() {
        return config_error(&error);
    }
    let guard = match kizuna_telemetry::init(
        &format!("kizuna-{}", service.as_str()),
        &settings.telemetry,
    ) {
        Ok(guard) => guard,
        Err(error) => return config_error(&error),
    };
    let signal = kizuna_server::wait_for_signal();
    let result = match service {
        ServiceName::Leads => run_leads(&settings, signal).await,
        ServiceName::Deals => run_deals(&settings, signal).await,
        ServiceName::Accounts => run_accounts(&settings, signal).await,
        ServiceName::Gateway => run_gateway(&settings, signal).await,
    };
    guard.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failure("service stopped with an error", &error),
    }
}

async fn run_leads(
    settings: &Settings,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    kizuna_leads::Application::build(settings)
        .await?
        .run_until_stopped(signal)
        .await
}

async fn run_deals(
    settings: &Settings,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    kizuna_deals::Application::build(settings)
        .await?
        .run_until_stopped(signal)
        .await
}

async fn run_accounts(
    settings: &Settings,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    kizuna_accounts::Application::build(settings)
        .await?
        .run_until_stopped(signal)
        .await
}

async fn run_gateway(
    settings: &Settings,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    kizuna_gateway::Application::build(settings)
        .await?
        .run_until_stopped(signal)
        .await
}

async fn migrate(mut settings: Settings, service: ServiceName) -> ExitCode {
    if let Err(error) = settings.validate_for_migration() {
        return config_error(&error);
    }
    let guard = match kizuna_telemetry::init(
        &format!("kizuna-{}", service.as_str()),
        &settings.telemetry,
    ) {
        Ok(guard) => guard,
        Err(error) => return config_error(&error),
    };
    settings.database.url = settings.migration_url().clone();
    let result = match service {
        ServiceName::Leads => kizuna_leads::Application::migrate(&settings).await,
        ServiceName::Deals => kizuna_deals::Application::migrate(&settings).await,
        ServiceName::Accounts => kizuna_accounts::Application::migrate(&settings).await,
        ServiceName::Gateway => kizuna_gateway::Application::migrate(&settings).await,
    };
    let code = match result {
        Ok(applied) => {
            tracing::info!(service = service.as_str(), applied, "migrations applied");
            ExitCode::SUCCESS
        }
        Err(error) => failure("migration failed", &error),
    };
    guard.shutdown();
    code
}

/// Checks a running service's gRPC health; exit 0 only for SERVING.
async fn health(
    settings: &Settings,
    addr: Option<String>,
    service: &str,
    timeout_secs: u64,
) -> ExitCode {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let addr = addr.unwrap_or_else(|| format!("127.0.0.1:{}", settings.server.port));
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint,
        Err(error) => return config_error(&format!("--addr {addr}: {error}")),
    };
    let timeout = Duration::from_secs(timeout_secs.max(1));
    let check = async {
        let channel = endpoint.connect_timeout(timeout).connect().await?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(reply.into_inner().status)
    };
    let shown = if service.is_empty() { "\"\"" } else { service };
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(status)) if status == ServingStatus::Serving as i32 => {
            println!("{addr} {shown}: SERVING");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            let name =
                ServingStatus::try_from(status).map_or("UNKNOWN", |status| status.as_str_name());
            println!("{addr} {shown}: {name}");
            ExitCode::FAILURE
        }
        Ok(Err(error)) => {
            eprintln!("kizuna: health check of {addr} {shown} failed: {error}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "kizuna: health check of {addr} {shown}: no answer within {} s",
                timeout.as_secs()
            );
            ExitCode::FAILURE
        }
    }
}

/// The HS256 key `up` uses: the configured one, or one kept in `<data_dir>/signing.key`.
fn local_signing_key(
    settings: &Settings,
    data_dir: &Path,
    create: bool,
) -> std::io::Result<Option<Secret>> {
    if !settings.auth.signing_key.is_empty() {
        return Ok(Some(settings.auth.signing_key.clone()));
    }
    let path = data_dir.join("signing.key");
    match std::fs::read_to_string(&path) {
        Ok(key) => Ok(Some(Secret::new(key.trim()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(data_dir)?;
            let bytes: [u8; 48] = rand::random();
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private(&path, &key)?;
            Ok(Some(Secret::new(key)))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

fn token(
    settings: Settings,
    scopes: &str,
    subject: &str,
    ttl_hours: u64,
    data_dir: &Path,
) -> ExitCode {
    let key = match local_signing_key(&settings, data_dir, false) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return config_error(
                &"auth.signing_key is not set and no key was found in the data folder; run `kizuna up` once or set KIZUNA__AUTH__SIGNING_KEY",
            );
        }
        Err(error) => return failure("cannot read the signing key", &error),
    };
    let authenticator = Authenticator::new(
        key.expose().as_bytes(),
        &settings.auth.issuer,
        &settings.auth.audience,
    );
    let scopes: Vec<&str> = scopes.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    match authenticator.issue(
        subject,
        &scopes,
        Duration::from_secs(ttl_hours.saturating_mul(3600)),
    ) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => failure("cannot sign the token", &error),
    }
}

async fn up(mut settings: Settings, data_dir: &Path, host: &str, port: u16) -> ExitCode {
    let key = match local_signing_key(&settings, data_dir, true) {
        Ok(Some(key)) => key,
        Ok(None) => return failure("cannot create a signing key", &"no key"),
        Err(error) => return failure("cannot create the signing key", &error),
    };
    settings.auth.signing_key = key;
    settings.server.host = host.to_owned();
    if std::env::var_os("KIZUNA__TELEMETRY__LOG_FORMAT").is_none() {
        settings.telemetry.log_format = LogFormat::Pretty;
    }
    // `kizuna` is the process's own resource (start-up, signals); each service's spans, logs and
    // metrics report under its own, `kizuna-<service>`, as under `kizuna serve`.
    let guard = match kizuna_telemetry::init("kizuna", &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => return config_error(&error),
    };
    let result = crate::cli::all_in_one(settings, data_dir, port).await;
    guard.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => failure("kizuna up failed", &error),
    }
}

fn for_service(settings: &Settings, data_dir: &Path, service: &str, port: u16) -> Settings {
    let mut settings = settings.clone();
    settings.database.url = Secret::new(format!("sqlite://{}/{service}.db", data_dir.display()));
    settings.server.port = port;
    settings
}

fn offset(port: u16, by: u16) -> u16 {
    if port == 0 {
        0
    } else {
        port.saturating_add(by)
    }
}

/// Builds the four applications (domain services first, so the gateway knows their ports) and
/// runs them until SIGINT/SIGTERM.
async fn all_in_one(settings: Settings, data_dir: &Path, port: u16) -> Result<(), StartError> {
    let checked = for_service(&settings, data_dir, "check", port);
    if let Err(error) = checked.validate() {
        eprintln!("kizuna: configuration error: {error}");
        std::process::exit(i32::from(EXIT_CONFIG));
    }
    let leads = kizuna_leads::Application::build(&for_service(
        &settings,
        data_dir,
        "leads",
        offset(port, 1),
    ))
    .await?;
    let deals = kizuna_deals::Application::build(&for_service(
        &settings,
        data_dir,
        "deals",
        offset(port, 2),
    ))
    .await?;
    let accounts = kizuna_accounts::Application::build(&for_service(
        &settings,
        data_dir,
        "accounts",
        offset(port, 3),
    ))
    .await?;
    let mut gateway_settings = for_service(&settings, data_dir, "gateway", port);
    let host = if settings.server.host == "0.0.0.0" {
        "127.0.0.1"
    } else {
        settings.server.host.as_str()
    };
    gateway_settings.gateway.leads_url = format!("http://{host}:{}", leads.port());
    gateway_settings.gateway.deals_url = format!("http://{host}:{}", deals.port());
    gateway_settings.gateway.accounts_url = format!("http://{host}:{}", accounts.port());
    let gateway = kizuna_gateway::Application::build(&gateway_settings).await?;

    let authenticator = Authenticator::new(
        settings.auth.signing_key.expose().as_bytes(),
        &settings.auth.issuer,
        &settings.auth.audience,
    );
    let token = authenticator
        .issue("admin", &["admin"], Duration::from_secs(24 * 3600))
        .unwrap_or_default();
    println!(
        "Kizuna is up (all-in-one, SQLite files in {}):",
        data_dir.display()
    );
    println!("  gateway   {host}:{}", gateway.port());
    println!("  leads     {host}:{}", leads.port());
    println!("  deals     {host}:{}", deals.port());
    println!("  accounts  {host}:{}", accounts.port());
    println!("Admin token (24 h; `kizuna token --scopes ...` makes narrower ones):");
    println!("  export KIZUNA_TOKEN={token}");
    println!("Try:");
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $KIZUNA_TOKEN\" -d '{{\"lead\":{{\"email\":\"taro@example.jp\"}}}}' {host}:{} kizuna.leads.v1.LeadsService/CreateLead",
        leads.port()
    );
    println!("Ctrl-C stops everything.");

    // One signal stops all four; each drains its own calls.
    let stop = kizuna_server::Shutdown::new();
    let watcher = stop.clone();
    tokio::spawn(async move {
        kizuna_server::wait_for_signal().await;
        watcher.trigger();
    });
    let waiter = |s: kizuna_server::Shutdown| async move { s.wait().await };
    let (a, b, c, d) = tokio::join!(
        leads.run_until_stopped(waiter(stop.clone())),
        deals.run_until_stopped(waiter(stop.clone())),
        accounts.run_until_stopped(waiter(stop.clone())),
        gateway.run_until_stopped(waiter(stop.clone())),
    );
    a.and(b).and(c).and(d)
}
