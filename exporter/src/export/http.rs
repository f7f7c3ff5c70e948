//! The routes: `/metrics`, the built-in page (`/`, `/targets/{name}`) and
//! its JSON API (`/api/targets`, `/api/targets/{name}/journeys`).
//!
//! The page is rendered on the server from templates (askama, which escapes every value: names
//! of namespaces and interfaces come from the node), with no external asset, so it works on a
//! node without internet access. It refreshes its live part every few seconds with a small
//! inline script, and with scripts turned off it is still complete and reloads itself.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;

use super::board::{Board, HopView, JourneyView, KEEP, Summary};
use super::prometheus::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The version of the JSON API's documents (`docs/api/*.schema.json`).
const API_VERSION: u32 = 1;

#[derive(Clone)]
struct App {
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    host: Arc<str>,
}

pub fn router(metrics: Arc<Metrics>, board: Arc<Board>) -> Router {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    Router::new()
        .route("/metrics", get(scrape))
        .route("/", get(index))
        .route("/targets/{name}", get(target_page))
        .route("/api/targets", get(api_targets))
        .route("/api/targets/{name}/journeys", get(api_journeys))
        .with_state(App {
            metrics,
            board,
            host: host.into(),
        })
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic text format
/// otherwise (curl, older scrapers).
async fn scrape(State(app): State<App>, headers: HeaderMap) -> Response {
    let metrics = app.metrics;
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

#[derive(Deserialize)]
struct Partial {
    #[serde(default)]
    partial: Option<u8>,
}

/// A target's row, as displayed.
struct Row {
    name: String,
    labels: Vec<String>,
    address: String,
    protocol: &'static str,
    status: &'static str,
    rtt: String,
    ratio: String,
    outcome: String,
    seen_netns: String,
    seen_interface: String,
    seen_verdict: String,
}

fn seconds(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn netns_cell(inode: u32, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{n} [{inode}]"),
        None => inode.to_string(),
    }
}

fn row(s: &Summary) -> Row {
    let last = s.last.as_ref();
    let seen = last.and_then(|j| j.last_seen.as_ref());
    Row {
        name: s.target.name.clone(),
        labels: s.target.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        address: s.target.address.clone(),
        protocol: s.target.protocol,
        status: match s.up {
            Some(true) => "up",
            Some(false) => "down",
            None => "waiting",
        },
        rtt: s.last_rtt_seconds.map(seconds).unwrap_or_default(),
        ratio: match s.success_ratio {
            Some(r) => format!("{:.0} % of {}", r * 100.0, s.kept),
            None => String::new(),
        },
        outcome: match last {
            Some(j) => match &j.detail {
                Some(d) => format!("{}: {d}", j.outcome),
                None => j.outcome.to_string(),
            },
            None => String::new(),
        },
        seen_netns: seen.map(|l| netns_cell(l.netns, &l.netns_name)).unwrap_or_default(),
        seen_interface: seen.map(|l| l.interface.clone()).unwrap_or_default(),
        seen_verdict: seen.map(|l| l.verdict.clone()).unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "targets.html")]
struct TargetsTable {
    rows: Vec<Row>,
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    host: &'a str,
    version: &'a str,
    rows: String,
}

struct HopRow {
    netns: String,
    interface: String,
    io: &'static str,
    direction: &'static str,
    addresses: String,
    verdict: String,
    latency: String,
    bar: String,
    fatal: bool,
}

struct JourneyRow {
    when: String,
    seq: u16,
    status: &'static str,
    outcome: &'static str,
    detail: String,
    trace_id: String,
    trace_link: String,
    path_changed: bool,
    hops: Vec<HopRow>,
}

#[derive(Template)]
#[template(path = "journeys.html")]
struct JourneysPart {
    summary: String,
    journeys: Vec<JourneyRow>,
}

#[derive(Template)]
#[template(path = "target.html")]
struct TargetPage<'a> {
    host: &'a str,
    name: &'a str,
    keep: usize,
    journeys: String,
}

fn hop_row(j: &JourneyView, h: &HopView) -> HopRow {
    HopRow {
        netns: netns_cell(h.netns, &h.netns_name),
        interface: if h.interface.is_empty() {
            "-".into()
        } else {
            h.interface.clone()
        },
        io: h.io,
        direction: h.direction,
        addresses: match (h.sport, h.dport) {
            (Some(sp), Some(dp)) => format!("{}:{sp} → {}:{dp}", h.saddr, h.daddr),
            _ => format!("{} → {}", h.saddr, h.daddr),
        },
        verdict: h.verdict.clone(),
        latency: if h.latency_seconds > 0.0 {
            seconds(h.latency_seconds)
        } else {
            String::new()
        },
        bar: j.bar(h),
        fatal: h.fatal,
    }
}

fn journey_row(board: &Board, j: &JourneyView) -> JourneyRow {
    let when = UNIX_EPOCH + Duration::from_secs_f64(j.at_unix);
    let trace_id = j.trace_id.clone().unwrap_or_default();
    JourneyRow {
        when: humantime::format_rfc3339_seconds(when).to_string(),
        seq: j.seq,
        status: if j.replied() { "up" } else { "down" },
        outcome: j.outcome.as_str(),
        detail: match (&j.detail, j.rtt_seconds) {
            _ if j.expect_violation.is_some() => format!(
                "path not as expected: {}",
                j.expect_violation.as_deref().unwrap_or_default()
            ),
            (Some(d), _) => d.clone(),
            (None, Some(rtt)) => format!("reply in {}, {} hops", seconds(rtt), j.hops.len()),
            (None, None) => String::new(),
        },
        trace_link: board
            .trace_link(&trace_id)
            .filter(|_| !trace_id.is_empty())
            .unwrap_or_default(),
        trace_id,
        path_changed: j.path_changed,
        hops: j.hops.iter().map(|h| hop_row(j, h)).collect(),
    }
}

fn html(r: askama::Result<String>) -> Response {
    match r {
        Ok(body) => Html(body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the page failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn index(State(app): State<App>, Query(q): Query<Partial>) -> Response {
    let rows = TargetsTable {
        rows: app.board.summaries().iter().map(row).collect(),
    }
    .render();
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return html(Err(e)),
    };
    if q.partial.is_some() {
        return Html(rows).into_response();
    }
    html(
        IndexPage {
            host: &app.host,
            version: env!("CARGO_PKG_VERSION"),
            rows,
        }
        .render(),
    )
}

fn not_found(name: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("no target named {name:?}\n")).into_response()
}

async fn target_page(State(app): State<App>, Path(name): Path<String>, Query(q): Query<Partial>) -> Response {
    let Some((summary, journeys)) = app.board.target(&name) else {
        return not_found(&name);
    };
    let part = TargetsTable {
        rows: vec![row(&summary)],
    }
    .render()
    .and_then(|summary| {
        JourneysPart {
            summary,
            journeys: journeys.iter().map(|j| journey_row(&app.board, j)).collect(),
        }
        .render()
    });
    let part = match part {
        Ok(p) => p,
        Err(e) => return html(Err(e)),
    };
    if q.partial.is_some() {
        return Html(part).into_response();
    }
    html(
        TargetPage {
            host: &app.host,
            name: &name,
            keep: KEEP,
            journeys: part,
        }
        .render(),
    )
}

async fn api_targets(State(app): State<App>) -> Response {
    Json(serde_json::json!({
        "version": API_VERSION,
        "targets": app.board.summaries(),
    }))
    .into_response()
}

async fn api_journeys(State(app): State<App>, Path(name): Path<String>) -> Response {
    let Some((summary, journeys)) = app.board.target(&name) else {
        return not_found(&name);
    };
    Json(serde_json::json!({
        "version": API_VERSION,
        "target": summary,
        "journeys": journeys,
    }))
    .into_response()
}
