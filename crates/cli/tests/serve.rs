//! `kiln serve` as a process: it prints the address it bound (port 0 picks a free one), serves,
//! and on SIGTERM stops accepting while the requests in flight run to completion; `kiln
//! bench-serve` drives it and `kiln compare` reads the reports.

use kiln_models::tiny::{write_tiny_llama, TinySpec};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `kiln serve` on a free port; returns the child and the address it printed.
fn spawn_server(model: &std::path::Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--model", model.to_str().unwrap(), "--port", "0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("kiln serve printed its address before exiting")
            .unwrap();
        if let Some(rest) = line.split("serving on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr (one log line per request) so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("kiln serve did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn sigterm_lets_the_stream_in_flight_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, write_tiny_llama(&TinySpec::default()).unwrap()).unwrap();
    let (mut child, addr) = spawn_server(&model, &["--parallel", "2"]);

    let body = r#"{"prompt": "keep going", "max_tokens": 200, "ignore_eos": true, "stream": true}"#;
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The response head has arrived: the request is in the engine.
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"200");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("data: [DONE]"), "the stream was cut: {rest}");
    assert!(
        rest.contains("\"completion_tokens\":200"),
        "the stream did not run to max_tokens: {rest}"
    );
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("kiln runs")
}

#[test]
fn bench_serve_drives_kiln_serve_and_compare_reads_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    std::fs::write(&model, write_tiny_llama(&TinySpec::default()).unwrap()).unwrap();
    // A queue delay makes the first batch wait for company (all must still finish).
    let (mut child, addr) =
        spawn_server(&model, &["--parallel", "4", "--max-queue-delay-ms", "20"]);
    let url = format!("http://{addr}");
    let reports: Vec<std::path::PathBuf> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("serve{i}.json"));
            let o = kiln(&[
                "bench-serve",
                "--url",
                &url,
                "--concurrency",
                "1,4",
                "--requests",
                "6",
                "--prompt-tokens",
                "20",
                "--max-tokens",
                "5",
                "-o",
                out.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            out
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reports[0]).unwrap()).unwrap();
    let levels = v["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for l in levels {
        assert_eq!(
            (l["ok"].as_u64(), l["failed"].as_u64()),
            (Some(6), Some(0)),
            "{l}"
        );
        // ignore_eos: every request generates exactly max_tokens.
        assert_eq!(l["completion_tokens"].as_u64(), Some(30), "{l}");
        for m in ["ttft_ms", "itl_ms", "e2e_ms"] {
            let p = &l[m];
            let (a, b, c) = (
                p["p50"].as_f64().unwrap(),
                p["p95"].as_f64().unwrap(),
                p["p99"].as_f64().unwrap(),
            );
            assert!(0.0 <= a && a <= b && b <= c, "{m}: {p}");
        }
    }
    let o = kiln(&[
        "compare",
        reports[0].to_str().unwrap(),
        reports[1].to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| 4 | serve1 |"), "{table}");
}

#[test]
fn bench_serve_reports_bad_targets_clearly() {
    // A port nothing listens on: bind one, then free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = kiln(&[
        "bench-serve",
        "--url",
        &format!("http://{free}"),
        "--requests",
        "1",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("connecting to"), "{err}");
    let o = kiln(&["bench-serve", "--url", "https://example.invalid"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("https is not supported"));
    let o = kiln(&["bench-serve", "--url", "http://x", "--concurrency", "two"]);
    assert_eq!(o.status.code(), Some(2));
}
