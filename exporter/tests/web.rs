//! The built-in page and its JSON API, on a live `tracepkt serve` probing a target that
//! answers, one whose probes are dropped, and one behind a namespace and an interface named
//! with markup. Headless Chromium (Debian's `chromium`) renders the pages; the JSON is checked
//! against `docs/api/schema.json`. Needs root; skips with a reason otherwise.
//!
//! Addresses come from 198.18.77.0/24 to 198.18.79.0/24 and exist only inside namespaces these
//! tests create.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Cleanup, TempDir, free_port, sh};

/// Where test artifacts (screenshots) are kept: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

fn json(url: &str) -> serde_json::Value {
    let (code, body) = get(url);
    assert_eq!(code, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
}

/// Validates `doc` against one definition of the API's published schema.
fn check_schema(doc: &serde_json::Value, def: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/schema.json");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let root = serde_json::json!({
        "$schema": schema["$schema"],
        "$defs": schema["$defs"],
        "$ref": format!("#/$defs/{def}"),
    });
    let validator = jsonschema::validator_for(&root).expect("the published schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{def} does not match the schema: {errors:#?}\n{doc:#}"
    );
}

/// Headless Chromium, or why it cannot run here.
fn chromium() -> Result<PathBuf, String> {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("headless Chromium is not installed (Debian package chromium)")?;
    // Under software emulation (the VM of other kernels) Chromium takes minutes to start;
    // the page is the same on every kernel, and its JSON is still checked there.
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if cpu.contains("QEMU Virtual CPU") {
        return Err("headless Chromium under software CPU emulation is too slow to drive".into());
    }
    Ok(bin)
}

fn chromium_cmd(bin: &Path, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM after scripts ran, as Chromium serialises it.
fn dom(bin: &Path, profile: &Path, url: &str) -> String {
    let out = chromium_cmd(bin, profile)
        .args(["--dump-dom", url])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium --dump-dom {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(bin: &Path, profile: &Path, url: &str, file: &Path) {
    let out = chromium_cmd(bin, profile)
        .arg(format!("--screenshot={}", file.display()))
        .args(["--window-size=1280,900", url])
        .output()
        .expect("run chromium");
    assert!(
        out.status.success() && file.exists(),
        "chromium --screenshot {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `<tr>` of the page's target table that names `target`.
fn row<'a>(dom: &'a str, target: &str) -> &'a str {
    let at = dom
        .find(&format!("data-target=\"{target}\""))
        .unwrap_or_else(|| panic!("no row for {target} in:\n{dom}"));
    let start = dom[..at].rfind("<tr").unwrap_or(at);
    let end = dom[at..].find("</tr>").map(|e| at + e).unwrap_or(dom.len());
    &dom[start..end]
}

#[test]
fn the_page_shows_each_target_and_where_failing_probes_stop() {
    let test = "the_page_shows_each_target_and_where_failing_probes_stop";
    require_privileges!(test);
    if !common::have_tool(test, "nft") {
        return;
    }
    let mut c = Cleanup::new();
    c.veth_ns("tpk-wok", "tpkw0", "198.18.77");
    let drop_ns = c.veth_ns("tpk-wdrop", "tpkw1", "198.18.78");
    common::nft_input_rule(&drop_ns, "icmp type echo-request drop");
    // Markup in the names the node hands over: a namespace and an interface.
    let odd_ns = c.netns("tpk<script>x");
    c.host_link("tpkw2");
    sh(&format!(
        "ip link add tpkw2 type veth peer name '<script>' netns '{odd_ns}' && \
         ip addr add 198.18.79.1/24 dev tpkw2 && ip link set dev tpkw2 up && \
         ip -n '{odd_ns}' addr add 198.18.79.2/24 dev '<script>' && ip -n '{odd_ns}' link set dev '<script>' up"
    ));

    let dir = TempDir::new("web");
    let port = free_port();
    let config = dir.path("config.yaml");
    common::write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\nattach: always\ninterval: 1s\ntimeout: 500ms\ntargets:\n\
             \x20 - {{name: passing, address: 198.18.77.2, labels: {{site: lab}}}}\n\
             \x20 - {{name: dropped, address: 198.18.78.2}}\n\
             \x20 - {{name: odd, address: 198.18.79.2}}\n\
             otlp:\n  endpoint: http://127.0.0.1:1\n  trace_url: http://traces.invalid/trace/{{trace_id}}\n"
        ),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    let base = format!("http://127.0.0.1:{port}");

    // Every target has a journey; the dropped one shows its drop.
    let targets = common::wait_for(30, "a journey of every target, and the drop", &log, || {
        let (code, body) = get(&format!("{base}/api/targets"));
        let doc: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
        let all = doc["targets"].as_array()?;
        let ready = all.len() == 3
            && all.iter().all(|t| !t["last"].is_null())
            && all
                .iter()
                .any(|t| t["name"] == "dropped" && t["last"]["outcome"] == "dropped");
        ready.then_some(doc)
    });
    check_schema(&targets, "TargetsDocument");
    let by_name = |n: &str| {
        targets["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
            .clone()
    };
    let passing = by_name("passing");
    assert_eq!(passing["up"], true, "{passing:#}");
    assert_eq!(passing["labels"]["site"], "lab");
    assert_eq!(passing["last"]["hops"].as_array().unwrap().len(), 4, "{passing:#}");
    assert!(
        passing["last"]["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{passing:#}"
    );
    let dropped = by_name("dropped");
    assert_eq!(dropped["up"], false);
    let seen = &dropped["last"]["last_seen"];
    assert_eq!(seen["netns_name"], "tpk-wdrop", "{dropped:#}");
    assert_eq!(seen["interface"], "eth0", "{dropped:#}");
    let reason = seen["verdict"]
        .as_str()
        .unwrap()
        .trim_start_matches("DROP ")
        .to_string();
    assert!(!reason.is_empty() && seen["kind"] == "drop", "{dropped:#}");
    let odd = by_name("odd");
    let odd_hops = odd["last"]["hops"].as_array().unwrap();
    assert!(
        odd_hops
            .iter()
            .any(|h| h["netns_name"] == odd_ns.as_str() && h["interface"] == "<script>"),
        "the JSON carries the names as they are: {odd:#}"
    );
    for name in ["passing", "dropped", "odd"] {
        let doc = json(&format!("{base}/api/targets/{name}/journeys"));
        check_schema(&doc, "JourneysDocument");
        assert_eq!(doc["target"]["name"], name);
        assert!(!doc["journeys"].as_array().unwrap().is_empty());
    }
    assert_eq!(get(&format!("{base}/api/targets/nope/journeys")).0, 404);
    assert_eq!(get(&format!("{base}/targets/nope")).0, 404);

    // The served HTML escapes the names: markup from the node is text, never markup.
    let (_, html) = get(&format!("{base}/targets/odd"));
    // Escaped as entities, named or numbered.
    let escaped = |text: &str, s: &str| {
        text.contains(&s.replace('<', "&lt;").replace('>', "&gt;"))
            || text.contains(&s.replace('<', "&#60;").replace('>', "&#62;"))
    };
    assert!(escaped(&html, "tpk<script>x"), "{html}");
    assert!(
        html.contains("<td class=\"interface\">&lt;script&gt;</td>")
            || html.contains("<td class=\"interface\">&#60;script&#62;</td>"),
        "the interface name is text: {html}"
    );
    assert!(!html.contains("tpk<script>"), "{html}");
    let (_, partial) = get(&format!("{base}/?partial=1"));
    assert!(
        partial.contains("data-target=\"dropped\"") && !partial.contains("<html"),
        "{partial}"
    );

    let bin = match chromium() {
        Ok(b) => b,
        Err(reason) => {
            common::skip(test, &reason);
            return;
        }
    };
    let profile = dir.path("chromium");
    let index = dom(&bin, &profile, &format!("{base}/"));
    let dropped_row = row(&index, "dropped");
    assert!(dropped_row.contains("class=\"down\""), "{dropped_row}");
    assert!(dropped_row.contains("tpk-wdrop"), "drop namespace: {dropped_row}");
    assert!(dropped_row.contains(">eth0<"), "drop interface: {dropped_row}");
    assert!(dropped_row.contains(&reason), "drop reason {reason}: {dropped_row}");
    let passing_row = row(&index, "passing");
    assert!(passing_row.contains("class=\"up\""), "{passing_row}");
    assert!(passing_row.contains("site=lab"), "{passing_row}");
    assert!(passing_row.contains("100 %"), "{passing_row}");

    let page = dom(&bin, &profile, &format!("{base}/targets/passing"));
    for ifname in ["tpkw0", "eth0"] {
        assert!(
            page.contains(&format!("<td class=\"interface\">{ifname}</td>")),
            "hop on {ifname}: {page}"
        );
    }
    assert!(page.contains("class=\"bar\""), "time bars: {page}");
    assert!(
        page.contains("href=\"http://traces.invalid/trace/"),
        "trace links: {page}"
    );

    let odd_page = dom(&bin, &profile, &format!("{base}/targets/odd"));
    assert!(escaped(&odd_page, "tpk<script>x"), "{odd_page}");
    assert!(!odd_page.contains("tpk<script>"), "{odd_page}");

    let shot = artifacts().join("web-index.png");
    screenshot(&bin, &profile, &format!("{base}/"), &shot);
    let shot_target = artifacts().join("web-target-dropped.png");
    screenshot(&bin, &profile, &format!("{base}/targets/dropped"), &shot_target);
    eprintln!("{test}: screenshots {} and {}", shot.display(), shot_target.display());
}
