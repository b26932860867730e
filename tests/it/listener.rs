//! The local server's listener, against the real registry-server process and raw sockets: a
//! half-sent request and an idle keep-alive connection are closed at their timeouts, a trickled
//! body is refused, a client that stops reading is given up on, a refused body is read to its end
//! before the connection is closed (lingering close) so that an oversized publish reaches the real
//! npm CLI as its E413 every time, and accepted sockets have TCP_NODELAY.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{Npm, Server, escaped, http, publish_doc, write_package};
use serde_json::json;

/// Far beyond every timeout the tests set: only a server that never closes reaches it.
const OUTER_DEADLINE: Duration = Duration::from_secs(30);

fn start(root: &Path, env: &[(&str, &str)]) -> Server {
    Server::start_with(
        root.join("data"),
        root.join("server.log"),
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn connect(server: &Server) -> TcpStream {
    let addr = server.url.trim_start_matches("http://");
    TcpStream::connect(addr).expect("connect to the server")
}

/// What the server sent until it closed the connection (a reset counts as closed); panics if it
/// is still open after `OUTER_DEADLINE`.
fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + OUTER_DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: still open after {OUTER_DEADLINE:?}"
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: still open after {OUTER_DEADLINE:?}")
            }
            Err(e) => panic!("{what}: read failed: {e}"),
        }
    }
}

/// Reads one response with a Content-Length body; returns its head and body.
fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    stream.set_read_timeout(Some(OUTER_DEADLINE)).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).expect("read a response");
        assert!(n > 0, "closed before a response: {data:?}");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).expect("read a response body");
        assert!(n > 0, "closed inside a response body");
        body.extend_from_slice(&buf[..n]);
    }
    (head, body)
}

#[test]
fn a_half_sent_request_is_closed_at_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // A long idle timeout, so that only the header timeout can close it.
    let server = start(
        tmp.path(),
        &[
            ("REGISTRY_HEADER_TIMEOUT_SECONDS", "1"),
            ("REGISTRY_IDLE_TIMEOUT_SECONDS", "600"),
        ],
    );
    let started = Instant::now();
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /-/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slo")
        .unwrap();
    let got = read_until_closed(&mut stream, "half-sent headers");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed before the timeout"
    );
    assert!(
        got.is_empty(),
        "no answer to half a request: {}",
        String::from_utf8_lossy(&got)
    );

    // A connection that never sends a byte is held no longer.
    let mut silent = connect(&server);
    assert!(read_until_closed(&mut silent, "silent connection").is_empty());

    // Requests sent whole are still answered.
    let mut normal = connect(&server);
    normal
        .write_all(b"GET /-/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut normal);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // A long header timeout, so that only the idle timeout can close it.
    let server = start(
        tmp.path(),
        &[
            ("REGISTRY_HEADER_TIMEOUT_SECONDS", "600"),
            ("REGISTRY_IDLE_TIMEOUT_SECONDS", "1"),
        ],
    );
    let mut stream = connect(&server);
    // Two requests on the connection: keep-alive works, and the idle clock restarts after each.
    for _ in 0..2 {
        stream
            .write_all(b"GET /-/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let (head, _) = read_response(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "kept alive: {head}"
        );
    }
    let idle_from = Instant::now();
    let got = read_until_closed(&mut stream, "idle keep-alive connection");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(900),
        "closed before the idle timeout"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
}

#[test]
fn a_trickled_body_is_refused_and_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(
        tmp.path(),
        &[
            ("REGISTRY_BODY_TIMEOUT_SECONDS", "1"),
            ("REGISTRY_BODY_MIN_BYTES_PER_SECOND", "1000"),
        ],
    );
    // Stalled: the body stops after its first byte.
    let mut stalled = connect(&server);
    stalled
        .write_all(
            b"PUT /@acme%2fslow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .unwrap();
    let got =
        String::from_utf8_lossy(&read_until_closed(&mut stalled, "stalled body")).into_owned();
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("too slowly"), "{got}");

    // Trickled: a byte every 100 ms never pauses for a second, but stays far below 1000 bytes/s.
    let mut trickled = connect(&server);
    trickled
        .write_all(
            b"PUT /@acme%2fslow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        )
        .unwrap();
    let mut writer = trickled.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let until = Instant::now() + OUTER_DEADLINE;
        // Paced writes are the client under test, not a wait for the server; they end when
        // the server closes the connection.
        while Instant::now() < until && writer.write_all(b" ").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let got =
        String::from_utf8_lossy(&read_until_closed(&mut trickled, "trickled body")).into_owned();
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("too slowly"), "{got}");
    trickled.shutdown(std::net::Shutdown::Both).ok();
    trickle.join().unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_given_up() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(
        tmp.path(),
        &[
            ("REGISTRY_BODY_TIMEOUT_SECONDS", "1"),
            ("REGISTRY_LOG", "info,registry::listener=debug"),
        ],
    );
    // More than the kernel buffers between the two ends hold (4 MiB of send buffer at most, and
    // a receive window that does not grow while the client reads nothing), so the server's
    // writes must wait for the client.
    let tarball = e2e::tgz(&[
        (
            "package/package.json",
            br#"{"name":"@acme/big","version":"1.0.0"}"#,
        ),
        ("package/blob.bin", &random_bytes(12 << 20)),
    ]);
    let created = http()
        .put(format!("{}/{}", server.url, escaped("@acme/big")))
        .json(&publish_doc("@acme/big", "1.0.0", &tarball))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let mut stream = connect(&server);
    stream
        .write_all(b"GET /@acme/big/-/big-1.0.0.tgz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    // The client under test reads nothing until the server says it gave up on it.
    let deadline = Instant::now() + OUTER_DEADLINE;
    while !server.log().contains("the client read nothing for 1 s") {
        assert!(
            Instant::now() < deadline,
            "the server still waits for a client that reads nothing, after {OUTER_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = read_until_closed(&mut stream, "client that stopped reading");
    assert!(
        got.len() < tarball.len(),
        "the server waited for the reader: {} of {} bytes",
        got.len(),
        tarball.len()
    );
    assert!(got.starts_with(b"HTTP/1.1 200"));
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    bytes
}

#[test]
fn after_a_413_the_rest_of_the_body_is_read_and_the_connection_ends_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = 1 << 20;
    let server = start(
        tmp.path(),
        &[("REGISTRY_MAX_BODY_BYTES", &limit.to_string())],
    );
    let total = 16 << 20;
    let chunk = vec![b' '; 64 << 10];
    let mut stream = connect(&server);
    stream
        .write_all(
            format!(
                "PUT /@acme%2fbig HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    stream.write_all(&chunk).unwrap();
    // Answered from the Content-Length, before the body was read.
    let (head, body) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("larger than this registry's limit"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // The client goes on sending its body, as npm does; a server that closed with unread bytes
    // has reset the connection, and these writes fail (npm's EPIPE).
    let mut sent = chunk.len();
    while sent < total {
        let n = chunk.len().min(total - sent);
        if let Err(e) = stream.write_all(&chunk[..n]) {
            panic!("the connection was reset after {sent} of {total} body bytes: {e}");
        }
        sent += n;
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    // Then the server closes its end in order: end of stream, not a reset.
    stream.set_read_timeout(Some(OUTER_DEADLINE)).unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest)),
        Err(e) => panic!("the connection did not end cleanly: {e}"),
    }
}

#[test]
fn an_oversized_publish_reaches_npm_as_e413_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let limit = 1 << 20;
    let server = start(root, &[("REGISTRY_MAX_BODY_BYTES", &limit.to_string())]);
    let npm = Npm::new(root, &server.url);
    let dir = write_package(&root.join("big"), "@acme/big", "1.0.0", json!({}));
    // Incompressible and far larger than the socket buffers between npm and the server, so npm
    // is still writing megabytes when the 413 (decided from the Content-Length) comes back.
    std::fs::write(dir.join("blob.bin"), random_bytes(16 << 20)).unwrap();
    let mut failures = Vec::new();
    for attempt in 1..=5 {
        // One try per run: npm retries a PUT that failed with EPIPE, which would hide how often
        // a single request fails (and take minutes of back-off).
        let run = npm.run(&dir, &["publish", "--fetch-retries=0"]);
        let all = run.all();
        if run.ok
            || !all.contains("E413")
            || !all.contains("larger than this registry's limit of 1048576 bytes")
        {
            failures.push(format!("attempt {attempt}:\n{all}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 5 publishes did not print the registry's 413:\n{}\nserver log:\n{}",
        failures.len(),
        failures.join("\n"),
        server.log()
    );
}

/// TCP_NODELAY on the server's accepted socket, read through a duplicate of the server's own
/// descriptor (pidfd_getfd): without it a response's body waits for the client's delayed ACK of
/// the headers on a reused connection.
#[cfg(target_os = "linux")]
#[test]
fn accepted_sockets_have_tcp_nodelay() {
    use std::os::fd::FromRawFd;

    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path(), &[]);
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /-/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    // Answered, so accepted and configured.
    read_response(&mut stream);
    let ours = stream.local_addr().unwrap();

    let pid = server.pid() as libc::pid_t;
    // SAFETY: plain syscalls on integers; the returned descriptors are owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) };
    let mut nodelay = None;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(target_fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        use std::os::fd::AsRawFd;
        let fd =
            unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) } as i32;
        if fd < 0 {
            continue;
        }
        // SAFETY: `fd` is a fresh duplicate we own; closing it leaves the server's socket open.
        let socket = unsafe { std::net::TcpStream::from_raw_fd(fd) };
        if socket.peer_addr().ok() == Some(ours) {
            nodelay = Some(socket.nodelay().unwrap());
        }
    }
    assert_eq!(
        nodelay,
        Some(true),
        "the server's socket for our connection (None: not found) has TCP_NODELAY"
    );
}
