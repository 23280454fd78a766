//! The HTTP endpoint of a run: `/metrics` (the Prometheus exposition of every crate's metrics) and, when a
//! [`Dashboard`] is given, the live status page on the same listener: `/` (the page; every asset is in the
//! binary), `/api/status` (the JSON the page polls) and `/thumbnails/SEQ.jpg`.
//!
//! One small server (hyper, HTTP/1.1, on its own thread and single-threaded runtime) rather than the
//! exporter's built-in listener, which serves nothing but the metrics.
//!
//! The page shows the images' thumbnails and ids, so the server defends itself like a local developer
//! server must ([`EndpointOptions`]): it answers the page only to a `Host` that is a loopback name, an IP
//! address or a configured name (a web page the operator visits cannot read it through DNS rebinding), drops
//! connections that take too long to send their headers (or sit idle), and serves a bounded number of
//! connections at once. `/metrics` answers to any `Host`, as Prometheus scrapes by whatever name it knows.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::dashboard::Dashboard;

/// The page, its script and its style sheet, embedded so the page works offline.
const PAGE: &str = include_str!("dashboard/assets/index.html");
const SCRIPT: &str = include_str!("dashboard/assets/dashboard.js");
const STYLE: &str = include_str!("dashboard/assets/dashboard.css");

/// How often histograms and summaries are maintained (the exporter's own listener does the same).
const UPKEEP: Duration = Duration::from_secs(5);

/// How often a refused connection is logged at most (a flood of them must not flood the log too).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How the endpoint protects the page and itself.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Names besides loopback names (`localhost`, `*.localhost`) and IP addresses that the page answers to
    /// in `Host`: the names operators reach it by (`sink-1.internal`), never a name an outsider controls.
    pub hosts: Vec<String>,
    /// Longest wait for a request's headers, also between the requests of a kept-alive connection: a client
    /// that sends nothing cannot hold a connection.
    pub header_timeout: Duration,
    /// Connections served at once; one more is closed at once (a page polls on one or two).
    pub max_connections: usize,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        Self { hosts: Vec::new(), header_timeout: Duration::from_secs(10), max_connections: 64 }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The metrics recorder could not be installed (another one already is).
    #[error("installing the metrics recorder")]
    Recorder(#[source] metrics_exporter_prometheus::BuildError),
    /// The address could not be bound.
    #[error("binding {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The server's thread or runtime could not be started.
    #[error("starting the HTTP server")]
    Runtime(#[source] std::io::Error),
}

/// Installs the process's metrics recorder ([`crate::prometheus`]) on the first call and serves `/metrics`
/// (and the status page, with a `dashboard`) on `address` for the process's lifetime. Returns the bound
/// address (port 0 picks a free one).
pub fn serve(
    address: SocketAddr,
    dashboard: Option<Dashboard>,
    options: EndpointOptions,
) -> Result<SocketAddr, EndpointError> {
    let listener = std::net::TcpListener::bind(address).map_err(|source| EndpointError::Bind { address, source })?;
    let bound = listener.local_addr().map_err(|source| EndpointError::Bind { address, source })?;
    listener.set_nonblocking(true).map_err(EndpointError::Runtime)?;
    let handle = recorder()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(EndpointError::Runtime)?;
    let server = Server { handle, dashboard, options: Arc::new(options) };
    std::thread::Builder::new()
        .name("fvision-http".into())
        .spawn(move || runtime.block_on(server.accept(listener)))
        .map_err(EndpointError::Runtime)?;
    Ok(bound)
}

/// The process's one recorder: installed by the first endpoint, shared by any later one.
fn recorder() -> Result<PrometheusHandle, EndpointError> {
    static RECORDER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut recorder = RECORDER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = recorder.as_ref() {
        return Ok(handle.clone());
    }
    let handle = crate::prometheus().install_recorder().map_err(EndpointError::Recorder)?;
    fvision_pipeline::metrics::register();
    fvision_outputs::metrics::describe();
    crate::build_info();
    *recorder = Some(handle.clone());
    Ok(handle)
}

/// What every connection of one endpoint shares.
#[derive(Clone)]
struct Server {
    handle: PrometheusHandle,
    dashboard: Option<Dashboard>,
    options: Arc<EndpointOptions>,
}

impl Server {
    async fn accept(self, listener: std::net::TcpListener) {
        let handle = self.handle.clone();
        let upkeep = handle;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(UPKEEP);
            loop {
                interval.tick().await;
                upkeep.run_upkeep();
            }
        });
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("the HTTP endpoint cannot listen: {e}");
                return;
            }
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(self.options.max_connections));
        let mut last_refusal: Option<Instant> = None;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!("accepting an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Full: close this one (dropping it) rather than queue it behind connections that may never end.
                if last_refusal.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL) {
                    last_refusal = Some(Instant::now());
                    let max = self.options.max_connections;
                    tracing::warn!(%peer, "the HTTP endpoint serves {max} connections at once: closing new ones");
                }
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let header_timeout = server.options.header_timeout;
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = server.respond(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(io, service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("HTTP connection: {e}");
                }
                drop(slot);
            });
        }
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
        }
        let path = request.uri().path();
        if path == "/metrics" {
            return reply(StatusCode::OK, "text/plain; version=0.0.4", self.handle.render());
        }
        let Some(dashboard) = self.dashboard.as_ref() else {
            return reply(StatusCode::NOT_FOUND, "text/plain", "only /metrics here (the status page is off)\n");
        };
        let host = request.headers().get(HOST).map(|h| h.to_str().unwrap_or("\u{fffd}"));
        if !host_allowed(host, &self.options.hosts) {
            return reply(
                StatusCode::FORBIDDEN,
                "text/plain",
                "the status page answers only to localhost, an IP address or a name in the status hosts setting\n",
            );
        }
        match path {
            "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
            "/dashboard.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
            "/dashboard.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
            "/api/status" => match serde_json::to_vec(&dashboard.status()) {
                Ok(json) => reply(StatusCode::OK, "application/json", json),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            },
            _ => {
                let name = path.strip_prefix("/thumbnails/").and_then(|p| p.strip_suffix(".jpg"));
                match name.and_then(|name| dashboard.thumbnail_jpeg(name)) {
                    Some(jpeg) => {
                        let mut response = reply(StatusCode::OK, "image/jpeg", Bytes::copy_from_slice(&jpeg));
                        // A thumbnail's name (run and outcome number) is never reused, not even by the next
                        // process: the browser may keep it as long as it likes.
                        response
                            .headers_mut()
                            .insert(CACHE_CONTROL, hyper::header::HeaderValue::from_static("max-age=3600, immutable"));
                        response
                    }
                    None => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
                }
            }
        }
    }
}

/// Whether `Host` names the page by a name no outsider controls: absent (not a browser), an IP address, a
/// loopback name or one of `hosts`. A DNS-rebinding page reaches the server under its own domain name, and
/// that is refused.
fn host_allowed(host: Option<&str>, hosts: &[String]) -> bool {
    let Some(host) = host else { return true };
    let name = match host.strip_prefix('[') {
        // `[::1]:9100`: an IPv6 address in brackets, then the port.
        Some(rest) => return rest.split_once(']').is_some_and(|(ip, _)| ip.parse::<IpAddr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || hosts.iter().any(|allowed| allowed.strip_suffix('.').unwrap_or(allowed).eq_ignore_ascii_case(&name))
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    if content_type != "image/jpeg" {
        response.headers_mut().insert(CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    }
    response
}
