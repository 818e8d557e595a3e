//! The operator as a child process, as users run it: `armor-refresh run` with its webhook.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Result, root, wait_for};

/// Where the processes the tests start write their logs (and the bench its timelines).
pub fn log_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("armor-refresh-e2e-logs")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The binary `e2e/run-tests.sh` builds before the tests.
pub fn binary() -> PathBuf {
    std::env::var_os("ARMOR_REFRESH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/armor-refresh"))
}

/// A running `armor-refresh` process.
pub struct Process {
    pub name: String,
    pub child: tokio::process::Child,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub args: Vec<String>,
    /// Extra environment (e.g. another KUBECONFIG), kept for restarts.
    pub env: Vec<(String, String)>,
}

/// Lines of a process's log shown when a test fails while it runs.
const LOG_TAIL_ON_FAILURE: usize = 80;

impl Drop for Process {
    /// A test that fails while the operator runs shows the end of its log: CI keeps only the
    /// test's output, and the log file is gone with the machine. A test that fails by an
    /// error (a `wait_for` timing out) drops it still running, not panicking; libtest shows
    /// what a passing test printed only with --nocapture.
    fn drop(&mut self) {
        let running = matches!(self.child.try_wait(), Ok(None));
        if !(std::thread::panicking() || running) {
            return;
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_ON_FAILURE)..];
        eprintln!(
            "--- last {} lines of {} ({}) ---\n{}\n--- end of {} ---",
            tail.len(),
            self.name,
            self.log.display(),
            tail.join("\n"),
            self.name
        );
    }
}

/// Plain-HTTP GET on loopback; returns (status, body).
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let (code, _, body) = http_get_with_headers(port, path).await?;
    Ok((code, body))
}

/// Plain-HTTP GET on loopback; returns (status, headers with lower-case names, body).
pub async fn http_get_with_headers(
    port: u16,
    path: &str,
) -> Result<(u16, Vec<(String, String)>, String)> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    Ok((code, headers, body.to_string()))
}

impl Process {
    /// Starts `armor-refresh ARGS...` (metrics on a free port) and waits until /readyz is ok.
    pub async fn start(name: &str, args: &[String]) -> Result<Process> {
        Self::start_with_env(name, args, &[]).await
    }

    /// [`Process::start`] with extra environment variables.
    pub async fn start_with_env(
        name: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Process> {
        let metrics_port = free_port();
        let mut all: Vec<String> = args.to_vec();
        all.extend(["--metrics-addr".into(), format!("127.0.0.1:{metrics_port}")]);
        Self::spawn(name, all, env.to_vec(), metrics_port).await
    }

    async fn spawn(
        name: &str,
        args: Vec<String>,
        env: Vec<(String, String)>,
        metrics_port: u16,
    ) -> Result<Process> {
        let dir = log_dir();
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!(
            "{name}-{}.log",
            chrono::Utc::now().format("%H%M%S%3f")
        ));
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(binary())
            .args(&args)
            // ARMOR_REFRESH_OPERATOR_LOG=info,armor_refresh::controller=debug shows where each
            // pass spends its time (the benchmark's operator too).
            .env(
                "RUST_LOG",
                std::env::var("ARMOR_REFRESH_OPERATOR_LOG")
                    .unwrap_or_else(|_| "info,kube_lease_manager=warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {}: {e} (run `cargo build --bin armor-refresh` first)",
                    binary().display()
                )
            })?;
        let p = Process {
            name: name.to_string(),
            child,
            log,
            metrics_port,
            args,
            env,
        };
        let port = p.metrics_port;
        let log = p.log.clone();
        wait_for(&format!("{name} to be ready (log: {})", log.display()), Duration::from_secs(60), || async move {
            Ok(matches!(http_get(port, "/readyz").await, Ok((200, _))).then_some(()))
        })
        .await?;
        Ok(p)
    }

    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, and waits (bounded) for a graceful exit; returns the exit code.
    pub async fn terminate(&mut self) -> Result<Option<i32>> {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(s) => Ok(s?.code()),
            Err(_) => {
                self.child.kill().await?;
                Err(format!("{} ignored SIGTERM for 15s", self.name).into())
            }
        }
    }

    /// Starts the same command line again (after a kill), on the same ports.
    pub async fn restart(&mut self) -> Result<()> {
        let _ = self.child.kill().await;
        let fresh = Self::spawn(
            &self.name,
            self.args.clone(),
            self.env.clone(),
            self.metrics_port,
        )
        .await?;
        *self = fresh;
        Ok(())
    }

    /// The OS process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Still running (checked on the process itself, not its log).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Evictions this process logged as accepted.
    pub fn evictions(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("eviction") && l.contains("result=\"ok\""))
            .count()
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(http_get(self.metrics_port, "/metrics").await?.1)
    }
}

/// Command-line arguments for `armor-refresh run` with its webhook on a free port, writing
/// the webhook configuration `webhook_config` to call it.
pub fn run_args(identity: &str, webhook_config: &str, lease: &str) -> Vec<String> {
    let port = free_port();
    [
        "run",
        "--identity",
        identity,
        "--lease-namespace",
        "default",
        "--lease-name",
        lease,
        "--lease-duration",
        "6",
        "--self-signed",
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
        "--webhook-config",
        webhook_config,
        "--webhook-url",
        &format!("https://127.0.0.1:{port}/mutate"),
        "--write-qps",
        "50",
        "--write-burst",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Environment that shifts a child's clock by `offset` ("+30s", "-30s") with libfaketime
/// (Debian's `libfaketime`), not its code; monotonic time is left alone.
pub fn faketime(offset: &str) -> Result<Vec<(String, String)>> {
    let lib = std::env::var("ARMOR_REFRESH_FAKETIME")
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1".into());
    if !std::path::Path::new(&lib).exists() {
        return Err(format!("{lib} is missing: apt-get install libfaketime (.ci/run does)").into());
    }
    Ok(vec![
        ("LD_PRELOAD".into(), lib),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_DONT_RESET".into(), "1".into()),
    ])
}

/// The value of one series in a `/metrics` text, e.g.
/// `armor_refresh_evictions_total{result="ok"}`; `None` if it is not exported.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
