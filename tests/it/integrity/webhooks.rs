//! B4. A receiver that never answers delays only its own deliveries: other receivers get their
//! events at once, passes do not wait, SIGTERM is prompt, and the hung deliveries stay pending.
//! C2. Webhook targets: internal addresses are refused at registration and at delivery (after
//! DNS resolution), whatever the spelling.

use super::event_types;
use crate::daemon::{http_get, start, stop, wait_for};
use crate::support::{TestRepo, embedded_config, free_port, tenancy};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A receiver that accepts connections and never answers; counts connections the client gave
/// up on (closed from its side).
struct Hanging {
    port: u16,
    accepted: Arc<AtomicUsize>,
    abandoned: Arc<AtomicUsize>,
}

fn hanging() -> Hanging {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let abandoned = Arc::new(AtomicUsize::new(0));
    let (a, b) = (accepted.clone(), abandoned.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            a.fetch_add(1, Ordering::SeqCst);
            let b = b.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                // Read (and never answer) until the client closes.
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                b.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Hanging {
        port,
        accepted,
        abandoned,
    }
}

/// A receiver that answers 200 at once and records each event's type.
fn healthy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            // Headers, then Content-Length bytes of body.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some(ty) = text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("tenancy-event-type")
                    .then(|| v.trim().to_owned())
            }) {
                g.lock().expect("lock").push(ty);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

fn add_webhook(cfg: &str, url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["webhooks", "add", "--config", cfg, "--url", url])
        .args([
            "--tenant",
            "*",
            "--event",
            "TENANCY_SUSPENDED,TENANCY_RESUMED",
        ])
        .args(["--secret-env", "HOOK_SECRET", "--output", "json"])
        .env("HOOK_SECRET", "whsec_0123456789abcdef")
        .output()
        .expect("webhooks add")
}

#[test]
fn a_hanging_receiver_delays_only_itself() {
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    crate::support::allow_local_webhooks(&config);
    let cfg = config.to_str().expect("utf-8");
    let hang = hanging();
    let (ok_port, got) = healthy();
    for url in [
        format!("http://127.0.0.1:{}/never", hang.port),
        format!("http://127.0.0.1:{ok_port}/hooks"),
    ] {
        let r = add_webhook(cfg, &url);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let port = free_port();
    let daemon = start(&repo, &config, port);
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(port, "/readyz").is_some_and(|(c, _)| c == 200)
    });

    // One commit suspends four tenants: four events for each receiver.
    let four = [
        "org_acme/t_5001.yaml",
        "org_acme/t_5002.yaml",
        "org_globex/t_6001.yaml",
        "org_initech/t_7001.yaml",
    ];
    for f in four {
        repo.edit(f, "lifecycle: Active", "lifecycle: Suspended");
    }
    repo.commit("suspend four tenants");
    wait_for(
        "the healthy receiver to get all four",
        Duration::from_secs(30),
        || got.lock().expect("lock").len() >= 4,
    );
    assert!(
        hang.accepted.load(Ordering::SeqCst) >= 1,
        "the hung one was tried"
    );
    assert_eq!(
        hang.abandoned.load(Ordering::SeqCst),
        0,
        "the healthy receiver got every event before the hung attempt even timed out"
    );

    // A pass does not wait for deliveries: the next commit converges while the hung attempt
    // is still open.
    repo.edit(
        "org_acme/t_5001.yaml",
        "lifecycle: Suspended",
        "lifecycle: Active",
    );
    repo.commit("resume t_5001");
    wait_for("t_5001 resumed", Duration::from_secs(30), || {
        event_types(&config, "t_5001")
            .iter()
            .any(|t| t == "TENANCY_RESUMED")
    });
    wait_for("the resumption delivered", Duration::from_secs(30), || {
        got.lock()
            .expect("lock")
            .iter()
            .any(|t| t == "TENANCY_RESUMED")
    });
    assert_eq!(hang.abandoned.load(Ordering::SeqCst), 0, "still hung");

    // SIGTERM is prompt (a generous guard: far below the 10 s of one hung attempt), and
    // what was in flight stays pending.
    let asked = Instant::now();
    assert!(stop(daemon).success());
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "SIGTERM waited for the hung delivery: {:?}",
        asked.elapsed()
    );
    let pending = tenancy(&[
        "webhooks",
        "deliveries",
        "--state",
        "pending",
        "--config",
        cfg,
        "--output",
        "json",
    ])
    .json();
    let pending = pending["deliveries"]
        .as_array()
        .or_else(|| pending.as_array())
        .cloned()
        .unwrap_or_default();
    assert!(
        pending.len() >= 4,
        "the hung receiver's deliveries are pending, not lost: {pending:#?}"
    );
}

/// Webhooks stored with internal targets (registered before these rules, or a name that
/// resolved elsewhere when it was registered — DNS rebinding) get nothing: every delivery is
/// checked after resolution, and connects only to an address that passed.
#[test]
fn internal_targets_are_refused_at_delivery_after_resolution() {
    use std::net::ToSocketAddrs;
    let repo = TestRepo::with_examples();
    let work = tempfile::tempdir().expect("tmp");
    let config = embedded_config(work.path());
    let cfg = config.to_str().expect("utf-8");
    // A receiver on every local address: anything that reaches it is a leak.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let reached = Arc::new(AtomicUsize::new(0));
    let r = reached.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            r.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    // This machine's own name resolves to one of its own (non-public) addresses.
    let host = std::process::Command::new("hostname")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|h| !h.is_empty())
        .expect("hostname");
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default();
    let mut urls = vec![
        format!("https://127.0.0.1:{port}/x"),
        format!("http://127.0.0.1:{port}/x"),
        format!("https://[::ffff:127.0.0.1]:{port}/x"),
        format!("https://2130706433:{port}/x"),
    ];
    let name_is_local = !addrs.is_empty()
        && addrs
            .iter()
            .all(|a| tenancy::webhooks::guard::not_global(a.ip()).is_some());
    if name_is_local {
        urls.push(format!("https://{host}:{port}/x"));
    } else {
        eprintln!(
            "`{host}` does not resolve to local addresses only ({addrs:?}); name check skipped"
        );
    }
    let store_url = tenancy::config::Config::load(Some(&config))
        .expect("config")
        .state_url();
    std::fs::create_dir_all(work.path().join("data")).expect("mkdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let store = tenancy::store::Store::open(&store_url)
            .await
            .expect("store");
        for url in &urls {
            store
                .put_webhook(
                    "*",
                    url,
                    &[],
                    "whsec_0123456789abcdef",
                    &tenancy::store::RetryPolicy {
                        max_attempts: 2,
                        initial_backoff_ms: 50,
                        max_backoff_ms: 100,
                    },
                )
                .await
                .expect("stored");
        }
    });
    let http = free_port();
    let daemon = start(&repo, &config, http);
    wait_for("/readyz", Duration::from_secs(30), || {
        http_get(http, "/readyz").is_some_and(|(c, _)| c == 200)
    });
    // Every delivery of the import ends dead, naming why.
    wait_for("every delivery dead", Duration::from_secs(60), || {
        let d = tenancy(&[
            "webhooks",
            "deliveries",
            "--config",
            cfg,
            "--limit",
            "1000",
            "--output",
            "json",
        ])
        .json();
        let d = d["deliveries"].as_array().cloned().unwrap_or_default();
        !d.is_empty() && d.iter().all(|d| d["state"] == "dead")
    });
    let d = tenancy(&[
        "webhooks",
        "deliveries",
        "--config",
        cfg,
        "--limit",
        "1000",
        "--output",
        "json",
    ])
    .json();
    for d in d["deliveries"].as_array().expect("deliveries") {
        let why = d["lastError"].as_str().unwrap_or_default();
        assert!(
            why.contains("target refused") || why.contains("resolves to"),
            "{d:#}"
        );
    }
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "nothing reached the receiver"
    );
    assert!(stop(daemon).success());
}
