//! The webhook's transport, as docs/security.md states it: TLS only (a plain-HTTP request
//! gets no HTTP answer), serving-certificate files rotated without a restart, and no key
//! material in its log. Certificates are generated here, at test time, with openssl.

use std::path::Path;
use std::time::Duration;

use armor_refresh_e2e::process::{Process, free_port};
use armor_refresh_e2e::{Result, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn sh(cmd: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A self-signed certificate for 127.0.0.1 with the given CN.
async fn cert(dir: &Path, name: &str) -> Result<(String, String)> {
    let crt = dir.join(format!("{name}.crt")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    )
    .await?;
    Ok((crt, key))
}

/// The subject CN of the certificate the server on `port` serves.
async fn served_cn(port: u16) -> Result<String> {
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    drop(child.stdin.take());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await??;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.trim().strip_prefix("subject=").map(str::to_string))
        .unwrap_or_default())
}

#[tokio::test]
async fn tls_only_rotation_without_restart_and_no_keys_in_logs() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("armor-refresh-security-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (crt, key) = cert(&dir, "first").await?;
    let live_crt = dir.join("tls.crt");
    let live_key = dir.join("tls.key");
    std::fs::copy(&crt, &live_crt)?;
    std::fs::copy(&key, &live_key)?;
    let port = free_port();
    let args: Vec<String> = [
        "webhook",
        "--tls-cert",
        &live_crt.display().to_string(),
        "--tls-key",
        &live_key.display().to_string(),
        "--webhook-addr",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut wh = Process::start("security-webhook", &args).await?;
    let pid = wh.child.id();

    // Plain HTTP: the TLS server answers nothing an HTTP client could read.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
        .await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // Over TLS it serves the certificate of the files.
    let cn = served_cn(port).await?;
    assert!(cn.contains("first"), "served {cn:?}");

    // Rotation: new files in place (as cert-manager's Secret update does); the same process
    // serves the new certificate within its reload period.
    let (crt2, key2) = cert(&dir, "second").await?;
    std::fs::copy(&key2, &live_key)?;
    std::fs::copy(&crt2, &live_crt)?;
    wait_for(
        "the rotated certificate to be served",
        Duration::from_secs(30),
        || async {
            let cn = served_cn(port).await?;
            Ok(cn.contains("second").then_some(()))
        },
    )
    .await?;
    assert_eq!(wh.child.id(), pid, "no restart");

    let _ = wh.terminate().await;
    let log = wh.log_text();
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
    let key_body: String = std::fs::read_to_string(&key2)?
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !log.contains(&key_body[..32.min(key_body.len())]),
        "key material in the log"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
