//! The real services that later stages converge (PostgreSQL, S3, two Kafka-protocol brokers),
//! started by `scripts/services.sh`. These tests prove each one is up and answers its own
//! protocol; the planes' own tests (issue 4 onwards) use the same endpoints.
//!
//! Endpoints come from the env file the script writes (`.services/env`, or the file named by
//! TENANCY_SERVICES_ENV). Without it the tests fail and say how to start the services, unless
//! TENANCY_SKIP_SERVICES=1 is set explicitly.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn endpoints() -> Option<HashMap<String, String>> {
    if std::env::var_os("TENANCY_SKIP_SERVICES").is_some_and(|v| v == "1") {
        eprintln!("TENANCY_SKIP_SERVICES=1: service checks skipped");
        return None;
    }
    let path = std::env::var("TENANCY_SERVICES_ENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| crate::support::workspace_root().join(".services/env"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}): start the services with `scripts/services.sh start` \
             (scripts/test.sh does it for you), or set TENANCY_SKIP_SERVICES=1",
            path.display()
        )
    });
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect(),
    )
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Read one PostgreSQL backend message: (type, body).
fn pg_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("pg message header");
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).expect("pg message body");
    (head[0], body)
}

#[test]
fn postgres_answers_a_query() {
    let Some(env) = endpoints() else { return };
    let url = &env["TENANCY_TEST_PG_URL"];
    let mut s = connect(&host_port(url));
    // StartupMessage, protocol 3.0, user postgres (trust auth on the test cluster).
    let mut params = Vec::new();
    for (k, v) in [("user", "postgres"), ("database", "postgres")] {
        params.extend_from_slice(k.as_bytes());
        params.push(0);
        params.extend_from_slice(v.as_bytes());
        params.push(0);
    }
    params.push(0);
    let mut msg = ((params.len() + 8) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&196608u32.to_be_bytes());
    msg.extend_from_slice(&params);
    s.write_all(&msg).expect("startup");
    loop {
        let (t, body) = pg_message(&mut s);
        assert_ne!(
            t,
            b'E',
            "startup refused: {}",
            String::from_utf8_lossy(&body)
        );
        if t == b'Z' {
            break;
        }
    }
    let sql = b"SELECT current_setting('server_version_num')::int / 10000\0";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    q.extend_from_slice(sql);
    s.write_all(&q).expect("query");
    let mut value = None;
    loop {
        let (t, body) = pg_message(&mut s);
        assert_ne!(t, b'E', "query failed: {}", String::from_utf8_lossy(&body));
        if t == b'D' {
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]) as usize;
            value = Some(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
        }
        if t == b'Z' {
            break;
        }
    }
    let major: u32 = value.expect("a row").parse().expect("number");
    assert!(major >= 13, "PostgreSQL {major}");
}

fn http(addr: &str, request: &str) -> String {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn s3_creates_and_lists_a_bucket() {
    let Some(env) = endpoints() else { return };
    let addr = host_port(&env["TENANCY_TEST_S3_URL"]);
    let bucket = format!("tenancy-it-{}", std::process::id());
    let put = http(
        &addr,
        &format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(
        put.starts_with("HTTP/1.1 200") || put.starts_with("HTTP/1.0 200"),
        "{put}"
    );
    let list = http(
        &addr,
        &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(list.contains("ListAllMyBucketsResult"), "{list}");
    assert!(list.contains(&format!("<Name>{bucket}</Name>")), "{list}");
    let del = http(
        &addr,
        &format!("DELETE /{bucket} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert!(del.contains(" 204 "), "{del}");
}

/// Send a Kafka ApiVersions v0 request and return the API keys the broker supports.
fn kafka_api_versions(addr: &str) -> Vec<i16> {
    let mut s = connect(addr);
    let client = b"tenancy-it";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // v0
    body.extend_from_slice(&4242i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    s.write_all(&frame).expect("write");
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("response size");
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).expect("response");
    assert_eq!(
        i32::from_be_bytes([resp[0], resp[1], resp[2], resp[3]]),
        4242,
        "correlation id"
    );
    assert_eq!(i16::from_be_bytes([resp[4], resp[5]]), 0, "error code");
    let n = i32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]) as usize;
    (0..n)
        .map(|i| i16::from_be_bytes([resp[10 + i * 6], resp[11 + i * 6]]))
        .collect()
}

#[test]
fn both_kafka_brokers_answer_api_versions() {
    let Some(env) = endpoints() else { return };
    for name in ["TENANCY_TEST_KAFKA_NOIDA", "TENANCY_TEST_KAFKA_TANSU"] {
        let keys = kafka_api_versions(&env[name]);
        for (key, api) in [
            (0, "Produce"),
            (1, "Fetch"),
            (3, "Metadata"),
            (19, "CreateTopics"),
        ] {
            assert!(keys.contains(&key), "{name} lacks {api}: {keys:?}");
        }
    }
    // The difference the queue plane must report clearly (issue 4): CreatePartitions (37).
    assert!(kafka_api_versions(&env["TENANCY_TEST_KAFKA_NOIDA"]).contains(&37));
}
