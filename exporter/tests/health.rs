//! `/healthz` tells the kubelet when tracepkt has stopped doing its job: here a target's probe
//! loop wedged for real, in the `open(2)` of its `from:` namespace, which a rename on disk
//! turned into a FIFO nobody writes to. `/healthz` answers 503 and names the target within a
//! few rounds, and `ok` again once the loop runs again. Needs root; skips with a reason
//! otherwise.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Cleanup, TempDir, free_port, sh, write};

/// `/healthz`'s status and body.
fn healthz(port: u16) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (code.to_owned(), body.to_owned())
}

/// Points the symlink `link` at `to`, in one rename.
fn repoint(link: &Path, to: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(to, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[test]
fn healthz_fails_when_a_probe_loop_stalls_and_recovers_when_it_runs_again() {
    let test = "healthz_fails_when_a_probe_loop_stalls_and_recovers_when_it_runs_again";
    require_privileges!(test);
    if !common::have_tool(test, "curl") || !common::have_tool(test, "mkfifo") {
        return;
    }
    let mut c = Cleanup::new();
    let ns = c.netns("tpk-hstall");
    sh(&format!("ip -n {ns} link set lo up"));
    let dir = TempDir::new(test);
    let link = dir.path("ns");
    let real = Path::new("/run/netns").join(&ns);
    repoint(&link, &real);
    let fifo = dir.path("fifo");
    sh(&format!("mkfifo {}", fifo.display()));

    let port = free_port();
    let config = dir.path("config.yaml");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 1s\ntimeout: 500ms\ntargets:\n\
             \x20 - {{name: wedged, address: 127.0.0.1, from: {{netns: {}}}}}\n\
             \x20 - {{name: fine, address: 127.0.0.1}}\n",
            link.display()
        ),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    common::wait_for(120, "both targets probed, and healthy", &log, || {
        let text = common::http_get(&format!("http://127.0.0.1:{port}/metrics"))?;
        let ok = |t: &str| common::sample(&text, &format!("tracepkt_probe_success{{target=\"{t}\"}}")) == Some(1.0);
        (ok("wedged") && ok("fine") && healthz(port).0 == "200").then_some(())
    });

    // The next open(2) of the namespace blocks for good.
    repoint(&link, &fifo);
    let body = common::wait_for(30, "/healthz failing on the wedged loop", &log, || {
        let (code, body) = healthz(port);
        (code == "503").then_some(body)
    });
    println!("/healthz while wedged: {body}");
    assert!(body.contains("target \"wedged\": no probing round completed"), "{body}");
    assert!(!body.contains("\"fine\""), "the other target still runs: {body}");

    // Freed: the open returns, entering a FIFO as a namespace fails, and the next rounds run.
    repoint(&link, &real);
    let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    drop(writer);
    common::wait_for(30, "/healthz ok again", &log, || {
        (healthz(port).0 == "200").then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
}
