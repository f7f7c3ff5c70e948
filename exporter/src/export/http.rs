//! The HTTP server: `/metrics`, `/healthz`, and a landing page at `/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::metrics::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(landing))
        .with_state(metrics)
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic text format
/// otherwise (curl, older scrapers).
async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    // Encoding reads kernel maps: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let mut body = String::with_capacity(16 * 1024);
        let r = if wants_openmetrics {
            prometheus_client::encoding::text::encode(&mut body, &metrics.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut body, &metrics.registry)
        };
        r.map(|()| body)
    })
    .await;
    match result {
        Ok(Ok(body)) => {
            let ct = if wants_openmetrics {
                OPENMETRICS
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            ([(header::CONTENT_TYPE, ct)], body).into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed\n").into_response(),
    }
}

async fn landing() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><title>tracepkt</title></head><body>",
        "<h1>tracepkt ",
        env!("CARGO_PKG_VERSION"),
        "</h1><p>Follows probe packets through the Linux network stack.</p>",
        "<ul><li><a href=\"/metrics\">Metrics</a></li><li><a href=\"/healthz\">Health</a></li></ul>",
        "</body></html>\n"
    ))
}
