//! The admin listener: `/metrics`, `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{Body, bytes_response, text_response};

/// Tells whether the process is ready to take work.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serves the admin routes until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    ready: Readiness,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = route(&req, &metrics, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
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
