//! The HTTP endpoint of a run: `/metrics` (the Prometheus exposition of every crate's metrics) and, when a
//! [`Dashboard`] is given, the live status page on the same listener: `/` (the page; every asset is in the
//! binary), `/api/status` (the JSON the page polls) and `/thumbnails/SEQ.jpg`.
//!
//! One small server (hyper, HTTP/1.1, on its own thread and single-threaded runtime) rather than the
//! exporter's built-in listener, which serves nothing but the metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::dashboard::Dashboard;

/// The page, its script and its style sheet, embedded so the page works offline.
const PAGE: &str = include_str!("dashboard/assets/index.html");
const SCRIPT: &str = include_str!("dashboard/assets/dashboard.js");
const STYLE: &str = include_str!("dashboard/assets/dashboard.css");

/// How often histograms and summaries are maintained (the exporter's own listener does the same).
const UPKEEP: Duration = Duration::from_secs(5);

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

/// Installs the process's metrics recorder ([`crate::prometheus`]) and serves `/metrics` (and the
/// status page, with a `dashboard`) on `address` for the process's lifetime. Returns the bound address (port
/// 0 picks a free one).
pub fn serve(address: SocketAddr, dashboard: Option<Dashboard>) -> Result<SocketAddr, EndpointError> {
    let listener = std::net::TcpListener::bind(address).map_err(|source| EndpointError::Bind { address, source })?;
    let bound = listener.local_addr().map_err(|source| EndpointError::Bind { address, source })?;
    listener.set_nonblocking(true).map_err(EndpointError::Runtime)?;
    let handle = crate::prometheus().install_recorder().map_err(EndpointError::Recorder)?;
    fvision_pipeline::metrics::register();
    fvision_outputs::metrics::describe();
    crate::build_info();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(EndpointError::Runtime)?;
    std::thread::Builder::new()
        .name("fvision-http".into())
        .spawn(move || runtime.block_on(accept(listener, handle, dashboard)))
        .map_err(EndpointError::Runtime)?;
    Ok(bound)
}

async fn accept(listener: std::net::TcpListener, handle: PrometheusHandle, dashboard: Option<Dashboard>) {
    let upkeep = handle.clone();
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
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("accepting an HTTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (handle, dashboard) = (handle.clone(), dashboard.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &handle, dashboard.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!("HTTP connection: {e}");
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    handle: &PrometheusHandle,
    dashboard: Option<&Dashboard>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    let path = request.uri().path();
    if path == "/metrics" {
        return reply(StatusCode::OK, "text/plain; version=0.0.4", handle.render());
    }
    let Some(dashboard) = dashboard else {
        return reply(StatusCode::NOT_FOUND, "text/plain", "only /metrics here (the status page is off)\n");
    };
    match path {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/dashboard.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/api/status" => match serde_json::to_vec(&dashboard.status()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        _ => {
            let seq =
                path.strip_prefix("/thumbnails/").and_then(|p| p.strip_suffix(".jpg")).and_then(|s| s.parse().ok());
            match seq.and_then(|seq| dashboard.thumbnail_jpeg(seq)) {
                Some(jpeg) => {
                    let mut response = reply(StatusCode::OK, "image/jpeg", Bytes::copy_from_slice(&jpeg));
                    // Outcome numbers are never reused: the browser may keep a thumbnail as long as it likes.
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

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    if content_type != "image/jpeg" {
        response.headers_mut().insert(CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    }
    response
}
