//! A real Prometheus server for the integration tests, with exemplar storage on, scraping one
//! target; queried through its HTTP API with `curl`.
//!
//! Prometheus keeps exemplars only from OpenMetrics scrapes (it asks for OpenMetrics first in
//! its Accept header) and only with `--enable-feature=exemplar-storage`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = "prometheus";

/// A Prometheus process and its scratch directory (config, TSDB, log); both go away on drop.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    dir: PathBuf,
}

/// One stored exemplar with the labels of the series it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    /// The series' labels, `__name__` included.
    pub series: BTreeMap<String, String>,
    /// The exemplar's own labels, e.g. `trace_id`.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Unix seconds.
    pub ts: f64,
}

/// A directory per server: tests in one binary run in parallel in the same process.
fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tracepkt-prom-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A duration as Prometheus's config reads it (it has no fractional seconds, so milliseconds).
fn prom_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// `GET url?params` with curl; None when the request fails or the status is not 2xx.
fn curl_get(url: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sf", "--max-time", "5", "-G", url]);
    for (k, v) in params {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`127.0.0.1:PORT`, path `/metrics`) every
    /// `interval`, and waits until it is ready. Err(reason) when Prometheus or curl is not
    /// installed, for the caller to record a skip; panics with Prometheus's log when it does
    /// not come up.
    pub fn start(target: &str, interval: Duration) -> Result<Prometheus, String> {
        Self::start_with(target, interval, &[])
    }

    /// The same, with more settings for the scrape job (YAML lines such as `scheme: https`).
    pub fn start_with(target: &str, interval: Duration, job: &[&str]) -> Result<Prometheus, String> {
        for tool in [BIN, "curl"] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(format!("{tool} is not installed"));
            }
        }
        let dir = scratch_dir();
        let config = dir.join("prometheus.yml");
        // The scrape timeout defaults to 10s, and Prometheus refuses one longer than the
        // interval.
        let d = prom_duration(interval);
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {d}\n  scrape_timeout: {d}\n  evaluation_interval: {d}\n\
                 scrape_configs:\n  - job_name: target\n    metrics_path: /metrics\n{}    \
                 static_configs:\n      - targets: ['{target}']\n",
                job.iter().map(|l| format!("    {l}\n")).collect::<String>()
            ),
        )
        .unwrap();
        let port = super::free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(BIN)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {BIN}: {e}"))?;
        let mut prom = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        };
        prom.wait_ready(Duration::from_secs(30));
        Ok(prom)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if curl_get(&format!("{}/-/ready", self.url), &[]).is_some() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}) before it was ready\nlog:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "prometheus not ready at {} after {timeout:?}\nlog:\n{}",
                    self.url,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET on the HTTP API; panics unless it answers with `"status": "success"`.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = format!("{}{path}", self.url);
        let body = curl_get(&url, params).unwrap_or_else(|| panic!("GET {url} {params:?} failed"));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"));
        assert_eq!(v["status"], "success", "GET {url} {params:?}: {body}");
        v
    }

    /// Exemplars of the series that `query` selects whose timestamps fall in
    /// `[start_unix, end_unix]`, one entry per exemplar.
    pub fn exemplars(&self, query: &str, start_unix: f64, end_unix: f64) -> Vec<Exemplar> {
        let (start, end) = (start_unix.to_string(), end_unix.to_string());
        let v = self.api(
            "/api/v1/query_exemplars",
            &[("query", query), ("start", &start), ("end", &end)],
        );
        let mut out = Vec::new();
        for series in v["data"].as_array().into_iter().flatten() {
            let series_labels = labels(&series["seriesLabels"]);
            for e in series["exemplars"].as_array().into_iter().flatten() {
                out.push(Exemplar {
                    series: series_labels.clone(),
                    labels: labels(&e["labels"]),
                    // The API gives values as strings (like samples) and timestamps as numbers.
                    value: e["value"].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN),
                    ts: e["timestamp"].as_f64().unwrap_or(f64::NAN),
                });
            }
        }
        out
    }

    /// An instant PromQL query; returns `data.result` as Prometheus gives it.
    pub fn query(&self, q: &str) -> Value {
        self.api("/api/v1/query", &[("query", q)])["data"]["result"].clone()
    }

    /// Polls until a scrape of the target has succeeded (`up == 1`); panics with Prometheus's
    /// view of the target and its log after `timeout`.
    pub fn wait_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(r#"up{job="target"} == 1"#);
            if r.as_array().is_some_and(|a| !a.is_empty()) {
                return;
            }
            if Instant::now() > deadline {
                let targets = curl_get(&format!("{}/api/v1/targets", self.url), &[]).unwrap_or_default();
                panic!(
                    "prometheus at {} has no successful scrape after {timeout:?}\ntargets: {targets}\nlog:\n{}",
                    self.url,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
