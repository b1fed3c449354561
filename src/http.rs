//! The operator's HTTP listener (`[metrics] listen`): `/metrics` for Prometheus, `/healthz`
//! (the process serves) and `/readyz` (it should get traffic: not stopping, and every shard
//! answered its last health probe).
//!
//! Readiness follows the health probes (`backend::health`), so it changes at most once per
//! `health_check_interval_secs`; with probing off every shard counts as reachable.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Whether the proxy should get traffic; Err says why not.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Binds `addr` and serves the endpoints in the background, for as long as the process runs.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    ready: Readiness,
) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot start metrics endpoint on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let (metrics, ready) = (metrics.clone(), ready.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let response = answer(req.uri().path(), &metrics, &ready);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    Ok(local)
}

fn answer(path: &str, metrics: &PrometheusHandle, ready: &Readiness) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => text(StatusCode::OK, crate::metrics::render(metrics)),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
