//! The admin listener: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{Body, bytes_response, text_response};
use crate::http_server::{self, ListenerConfig};

/// Tells whether the process is ready to take work.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves the admin routes until `shutdown` fires, under the HTTP limits
/// of `listener` ([`crate::http_server`]).
pub async fn serve(
    listener: TcpListener,
    config: ListenerConfig,
    metrics: PrometheusHandle,
    ready: Readiness,
    shutdown: CancellationToken,
) {
    let service = move |req: Request<Incoming>| {
        let response = route(&req, &metrics, &ready);
        async move { response }
    };
    http_server::serve(listener, config, service, shutdown).await;
}

fn route<B>(req: &Request<B>, metrics: &PrometheusHandle, ready: &Readiness) -> Response<Body> {
    if req.method() != Method::GET {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => bytes_response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(metrics.render()),
        ),
        "/healthz" => text_response(StatusCode::OK, "ok\n"),
        "/readyz" if ready() => text_response(StatusCode::OK, "ready\n"),
        "/readyz" => text_response(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text_response(StatusCode::NOT_FOUND, "not found\n"),
    }
}
