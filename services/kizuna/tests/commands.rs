//! The `kizuna` binary as an operator runs it: `migrate` without a signing key, with a separate
//! migration URL, logging JSON on stderr; `health` answering with its exit status.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "test-signing-key-0123456789abcdef0123456789";

/// `kizuna ARGS` with only `env` (and PATH) in its environment.
fn kizuna(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kizuna"));
    command.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    kizuna(args, env).output().expect("kizuna runs")
}

fn sqlite(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"))
        })
        .collect()
}

fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn migrate_needs_no_signing_key_and_logs_json_on_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite(dir.path(), "leads.db");
    let output = run(
        &["migrate", "leads"],
        &[("KIZUNA__DATABASE__URL", url.clone())],
    );
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout.is_empty(),
        "logs go to stderr, stdout stays empty"
    );
    let lines = json_lines(&output.stderr);
    let done = lines
        .iter()
        .find(|line| message(line) == "migrations applied")
        .expect("a `migrations applied` line");
    assert_eq!(done["fields"]["service"], "leads");
    assert!(
        done["fields"]["applied"].as_u64().unwrap_or_default() > 0,
        "{done}"
    );

    // A second run applies nothing and still succeeds.
    let again = run(&["migrate", "leads"], &[("KIZUNA__DATABASE__URL", url)]);
    assert!(again.status.success());
    let lines = json_lines(&again.stderr);
    let done = lines
        .iter()
        .find(|line| message(line) == "migrations applied")
        .expect("a `migrations applied` line");
    assert_eq!(done["fields"]["applied"], 0);
}

#[test]
fn migrate_uses_the_migration_url_when_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run(
        &["migrate", "deals"],
        &[
            // The service's URL points where nothing may be created; the migration URL wins.
            (
                "KIZUNA__DATABASE__URL",
                sqlite(&dir.path().join("absent/nested"), "never.db"),
            ),
            (
                "KIZUNA__DATABASE__MIGRATION_URL",
                sqlite(dir.path(), "owner.db"),
            ),
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("owner.db").exists());
    assert!(!dir.path().join("absent").exists());
}

#[test]
fn migrate_names_a_bad_migration_url_and_exits_64() {
    let output = run(
        &["migrate", "accounts"],
        &[(
            "KIZUNA__DATABASE__MIGRATION_URL",
            "mysql://db/accounts".to_owned(),
        )],
    );
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database.migration_url"), "{stderr}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn health_exits_zero_only_when_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let closed = free_port();

    // Nothing listens: non-zero, and the reason on stderr.
    let output = run(&["health", "--addr", &format!("127.0.0.1:{closed}")], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!output.stderr.is_empty());

    let env = [
        ("KIZUNA__DATABASE__URL", sqlite(dir.path(), "leads.db")),
        ("KIZUNA__AUTH__SIGNING_KEY", KEY.to_owned()),
        ("KIZUNA__SERVER__HOST", "127.0.0.1".to_owned()),
        ("KIZUNA__SERVER__PORT", port.to_string()),
    ];
    let _server = Running(
        kizuna(&["serve", "leads"], &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    // Without --addr the configured port is used, as in a compose health check.
    let port_only = [("KIZUNA__SERVER__PORT", port.to_string())];
    let deadline = Instant::now() + Duration::from_secs(60);
    let serving = loop {
        let output = run(&["health"], &port_only);
        if output.status.success() || Instant::now() > deadline {
            break output;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        serving.status.success(),
        "{}",
        String::from_utf8_lossy(&serving.stderr)
    );
    assert!(String::from_utf8_lossy(&serving.stdout).contains("SERVING"));

    let liveness = run(&["health", "--service", "liveness"], &port_only);
    assert!(liveness.status.success());

    // A health service the server does not know: NOT_FOUND, non-zero.
    let unknown = run(&["health", "--service", "no.such.Service"], &port_only);
    assert_eq!(unknown.status.code(), Some(1));
}
