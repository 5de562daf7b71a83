//! `kizuna up` with its log going to a file writes plain text: no ANSI colour codes.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[test]
fn up_logs_without_colour_codes_when_stderr_is_a_file() {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("kizuna-up-log-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log_path = dir.join("up.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kizuna"))
        .args(["up", "--port", "0", "--data-dir"])
        .arg(dir.join("data"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("KIZUNA__TELEMETRY__LOG_FORMAT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kizuna up starts");

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = Vec::new();
    while Instant::now() < deadline {
        text.clear();
        std::fs::File::open(&log_path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .expect("read log");
        if String::from_utf8_lossy(&text).contains("serving gRPC") {
            break;
        }
        if let Some(status) = child.try_wait().expect("poll") {
            panic!(
                "kizuna up exited with {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().expect("stop kizuna up");
    child.wait().expect("reap kizuna up");
    let shown = String::from_utf8_lossy(&text).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(shown.contains("serving gRPC"), "never served: {shown}");
    assert!(
        !text.contains(&0x1b),
        "ANSI escape codes in the log file:\n{shown:?}"
    );
}
