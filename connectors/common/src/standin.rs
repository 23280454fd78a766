//! What `fvision dev` and the test harness share to start the local stand-in servers (the Google emulators):
//! a free port, a readiness probe (the status of one `GET`, with just enough HTTP to need no client library)
//! and the services cloudbox serves, each on a port of its own. The production binary cannot depend on the
//! test harness, so the harness takes them from here.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The services of the cloudbox emulator, in the order its launcher reads their `CLOUDBOX_<SERVICE>_PORT`.
pub const CLOUDBOX_SERVICES: [&str; 11] = [
    "GCS",
    "PUBSUB",
    "PUBSUB_REST",
    "FIRESTORE",
    "SECRETMANAGER",
    "TASKS",
    "BIGQUERY",
    "SPANNER",
    "LOGGING",
    "SCHEDULER",
    "ADMIN",
];

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The status code of `GET path` on 127.0.0.1:`port`, or `None` when nothing answers.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 16];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_of_a_server_and_none_where_nothing_listens() {
        let port = free_port().unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let n = stream.read(&mut request).unwrap();
            assert!(request[..n].starts_with(b"GET /readyz HTTP/1.0\r\n"));
            stream.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
        });
        assert_eq!(http_get_status(port, "/readyz"), Some(503));
        server.join().unwrap();
        assert_eq!(http_get_status(port, "/readyz"), None, "the listener is closed");
    }
}
