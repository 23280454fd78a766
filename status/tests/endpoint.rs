//! The HTTP endpoint against real TCP clients: the page answers only to names no outsider controls, slow
//! and idle clients are dropped, and a flood of connections is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fvision_status::dashboard::Dashboard;
use fvision_status::{serve, EndpointOptions};

/// Longest any single read waits here: far above what the server needs, so a hang fails instead of
/// blocking the suite.
const READ_LIMIT: Duration = Duration::from_secs(30);

fn start(options: EndpointOptions) -> SocketAddr {
    serve(([127, 0, 0, 1], 0).into(), Some(Dashboard::new("embedded")), options).expect("the endpoint starts")
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(READ_LIMIT)).expect("read timeout");
    stream
}

/// The status code of `GET path` sent with `host` as its `Host` header.
fn status_with_host(address: SocketAddr, path: &str, host: &str) -> u16 {
    let mut stream = connect(address);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read the response");
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status: {head}"))
}

/// Whether the server closed `stream` (end of file) before sending anything.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

#[test]
fn the_page_answers_only_to_loopback_names_ip_addresses_and_configured_hosts() {
    let address = start(EndpointOptions { hosts: vec!["sink-1.internal".into()], ..EndpointOptions::default() });
    let port = address.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        format!("app.localhost:{port}"),
        format!("[::1]:{port}"),
        format!("10.1.2.3:{port}"),
        format!("Sink-1.Internal.:{port}"),
    ] {
        for path in ["/", "/api/status"] {
            assert_eq!(status_with_host(address, path, &host), 200, "{path} with Host {host}");
        }
    }
    // A DNS-rebinding page reaches the server under its own name: refused, also for the thumbnails.
    for host in [format!("attacker.example:{port}"), "localhost.attacker.example".into(), "[not-an-ip]".into()] {
        for path in ["/", "/api/status", "/thumbnails/1-1.jpg"] {
            assert_eq!(status_with_host(address, path, &host), 403, "{path} with Host {host}");
        }
    }
    // Prometheus scrapes by whatever name it knows; /metrics shows no image.
    assert_eq!(status_with_host(address, "/metrics", "prometheus-target.example"), 200);
}

#[test]
fn a_client_that_sends_no_headers_is_disconnected() {
    let address = start(EndpointOptions { header_timeout: Duration::from_secs(1), ..EndpointOptions::default() });
    let mut silent = connect(address);
    let mut slow = connect(address);
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").expect("half the headers");
    assert!(closed_by_server(&mut silent), "a connection that sends nothing is closed");
    assert!(closed_by_server(&mut slow), "a request whose headers never end is closed");

    // Kept alive after a request, then idle: closed as well.
    let mut kept = connect(address);
    kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("a request");
    let mut response = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match kept.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) => panic!("an idle kept-alive connection was never closed: {e}"),
        }
    }
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
}

#[test]
fn a_flood_of_connections_is_bounded_and_the_endpoint_recovers() {
    let max_connections = 8;
    // Headers may take a minute here, so any connection that ends sooner was refused for the limit.
    let options =
        EndpointOptions { max_connections, header_timeout: Duration::from_secs(60), ..EndpointOptions::default() };
    let address = start(options);
    // 25 times the limit: clients that connect and send nothing.
    let mut flood: Vec<(TcpStream, bool)> = (0..200).map(|_| (connect(address), false)).collect();
    let deadline = Instant::now() + READ_LIMIT;
    loop {
        for (stream, closed) in flood.iter_mut().filter(|(_, closed)| !*closed) {
            stream.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
            *closed = closed_by_server(stream);
        }
        let open = flood.iter().filter(|(_, closed)| !*closed).count();
        if open == max_connections {
            break;
        }
        assert!(open > max_connections, "only {max_connections} connections are held, never fewer: {open}");
        assert!(Instant::now() < deadline, "{open} connections still open; the limit is {max_connections}");
    }
    // The held ones are still served: the limit closes new connections, not old ones.
    let (held, _) = flood.iter_mut().find(|(_, closed)| !*closed).expect("a held connection");
    held.set_read_timeout(Some(READ_LIMIT)).expect("read timeout");
    held.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = Vec::new();
    held.read_to_end(&mut response).expect("the held connection answers");
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    // Once the clients leave, new ones are served again.
    drop(flood);
    loop {
        let mut stream = connect(address);
        let sent = stream.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let mut response = Vec::new();
        if sent.is_ok() && stream.read_to_end(&mut response).is_ok() && response.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint never served again after the flood");
        std::thread::sleep(Duration::from_millis(100));
    }
}
