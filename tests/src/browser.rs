//! A real browser for the status-page tests: Debian's `chromium`, headless, driven through `chromedriver`
//! with the W3C WebDriver protocol (JSON over HTTP: new session, navigate, execute script, screenshot). The
//! handful of calls the tests need are made here directly, over a plain HTTP/1.1 connection, rather than
//! through a WebDriver client crate and its dependency tree.
//!
//! `scripts/test.sh` installs both packages (`ensure_browser` in `scripts/lib.sh`). Without them
//! [`Browser::start`] fails under CI (`CI` set) and reports the test as skipped elsewhere.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// Chromium flags that work in a container without a display or a GPU, with no network calls of its own.
const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
];

/// A headless Chromium session; the browser and its driver are stopped on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. `None` (reported as skipped) when they are not
    /// installed outside CI; under CI a missing browser fails the test.
    pub fn start(test: &str) -> Option<Self> {
        let (Some(driver), Some(chromium)) = (find(&["chromedriver"]), find(&["chromium", "chromium-browser"])) else {
            let reason = "chromium and chromium-driver are not installed (scripts/test.sh installs them with apt-get)";
            assert!(std::env::var_os("CI").is_none(), "{test}: {reason}");
            crate::cluster::report_skip(test, reason);
            return None;
        };
        let port = crate::emulators::free_port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let mut browser = Self { driver, port, session: String::new(), _profile: profile };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.request("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", browser._profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"].as_str().expect("a session id").to_string();
        Some(browser)
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.call("POST", &format!("/session/{}/url", self.session), Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub fn execute(&self, script: &str) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` until it returns something other than `null`/`false`, for at most `limit`.
    pub fn wait_for(&self, script: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.execute(script);
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            assert!(Instant::now() < deadline, "the page never satisfied: {script}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let value = self.call("GET", &format!("/session/{}/screenshot", self.session), None);
        let png = base64::engine::general_purpose::STANDARD.decode(value.as_str().expect("base64")).expect("a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// One WebDriver command; panics with the driver's message on an error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, reply) = self.request(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let reply: Value = serde_json::from_slice(&reply).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(status == 200, "{method} {path}: HTTP {status}: {reply}");
        reply["value"].clone()
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> std::io::Result<(u16, Vec<u8>)> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            self.port,
            body.len()
        );
        http(self.port, head.as_bytes(), body.as_bytes())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    http(port, head.as_bytes(), b"")
}

/// One HTTP/1.1 exchange: the body is read by its `Content-Length` (chromedriver keeps connections open
/// whatever the request says), de-chunked when the server chunks it, else read to the end.
fn http(port: u16, head: &[u8], body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(head)?;
    stream.write_all(body)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(split) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            break split;
        }
        match stream.read(&mut buf)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => reply.extend_from_slice(&buf[..n]),
        }
    };
    let headers = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
    let status = headers.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    let length =
        headers.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = headers.contains("transfer-encoding: chunked") || headers.contains("transfer-encoding:chunked");
    let mut body = reply.split_off(split + 4);
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        match stream.read(&mut buf)? {
            0 => break,
            n => body.extend_from_slice(&buf[..n]),
        }
    }
    if let Some(length) = length {
        body.truncate(length);
    } else if chunked {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}
