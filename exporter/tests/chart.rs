//! The Helm chart (helm/tracepkt) and what it runs. The rendered manifests must be valid
//! Kubernetes (custom resources included) and least-privileged; the binary, started with the
//! DaemonSet's command, the ConfigMap's config and exactly the container's capabilities, must
//! attach, probe and serve; and without CAP_PERFMON its log must name that capability.
//!
//! No container runtime runs here, so the container is reproduced by hand: same arguments, same
//! config, same capability sets (setpriv), in the node's network namespace as hostNetwork is.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, TempDir};
use serde::Deserialize;
use serde_json::Value;

/// The capabilities the chart always adds, as the container spec spells them.
const CHART_CAPS: [&str; 4] = ["BPF", "PERFMON", "NET_RAW", "NET_ADMIN"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// helm from .tools (scripts/deps.sh test), else from PATH; None records the skip.
fn helm(test: &str) -> Option<PathBuf> {
    let local = repo().join(".tools/bin/helm");
    let helm = if local.exists() { local } else { PathBuf::from("helm") };
    if Command::new(&helm)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(helm);
    }
    common::skip(
        test,
        "helm is not installed (scripts/deps.sh test installs it into .tools/bin)",
    );
    None
}

/// The chart in a scratch tree laid out like the repository, so that its dashboards/ and
/// alerts/ links resolve as they do there. Until the repository has dashboards and alert
/// rules, placeholders stand in for them, so those templates are rendered and validated too.
struct Chart {
    helm: PathBuf,
    tmp: TempDir,
}

impl Chart {
    fn new(test: &str) -> Option<Chart> {
        let helm = helm(test)?;
        let tmp = TempDir::new(&format!("chart-{test}"));
        let root = tmp.path("");
        common::sh(&format!(
            "mkdir -p {r}/helm && cp -a {src}/helm/tracepkt {r}/helm/ && \
             mkdir -p {r}/dashboards {r}/alerts && \
             cp -a {src}/dashboards/. {r}/dashboards/ 2>/dev/null; \
             cp -a {src}/alerts/. {r}/alerts/ 2>/dev/null; true",
            r = root.display(),
            src = repo().display()
        ));
        for link in ["dashboards", "alerts"] {
            let p = root.join("helm/tracepkt").join(link);
            assert!(
                p.symlink_metadata().unwrap().file_type().is_symlink(),
                "helm/tracepkt/{link} is meant to be a link to the repository's {link}/"
            );
        }
        let rules = root.join("alerts/tracepkt.rules.yml");
        if !rules.exists() {
            eprintln!("{test}: alerts/tracepkt.rules.yml is not in this tree: a placeholder stands in");
            common::write(
                &rules,
                "groups:\n  - name: tracepkt\n    rules:\n      - alert: TracepktProbeFailing\n        \
                 expr: tracepkt_probe_success == 0\n        for: 5m\n        labels: {severity: warning}\n",
            );
        }
        let has_dashboard = std::fs::read_dir(root.join("dashboards"))
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "json"));
        if !has_dashboard {
            eprintln!("{test}: no dashboards/*.json in this tree: a placeholder stands in");
            common::write(
                &root.join("dashboards/placeholder.json"),
                "{\"title\": \"placeholder\"}\n",
            );
        }
        Some(Chart { helm, tmp })
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path("helm/tracepkt")
    }

    fn all_on(&self) -> PathBuf {
        self.dir().join("ci/all-on-values.yaml")
    }

    fn helm(&self, args: &[&str]) -> String {
        let out = Command::new(&self.helm).args(args).output().expect("run helm");
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm template` with these extra arguments (`-f FILE`, `--set K=V`), as text.
    fn render(&self, extra: &[&str]) -> String {
        let dir = self.dir();
        let mut args = vec!["template", "tpk", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.helm(&args)
    }
}

fn docs(rendered: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(rendered)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter().map(|d| d["kind"].as_str().unwrap().to_string()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn container(docs: &[Value]) -> &Value {
    &find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
}

fn added_caps(docs: &[Value]) -> Vec<String> {
    container(docs)["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// Every `privileged` key anywhere in `v`, with its value.
fn privileged(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "privileged" {
                    out.push(x.clone());
                }
                privileged(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| privileged(x, out)),
        _ => {}
    }
}

#[test]
fn chart_lints_renders_and_validates() {
    let test = "chart_lints_renders_and_validates";
    let Some(chart) = Chart::new(test) else { return };
    // Where scripts/deps.sh makes it: outside the work tree, as it is third-party code.
    let venv = std::env::var_os("TRACEPKT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tracepkt/venv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        common::skip(
            test,
            &format!(
                "no {} (scripts/deps.sh test makes it with kubernetes-validate)",
                venv.display()
            ),
        );
        return;
    }
    let dir = chart.dir();
    let dir = dir.to_str().unwrap();
    let all_on = chart.all_on();
    let all_on = all_on.to_str().unwrap();
    chart.helm(&["lint", "--strict", dir]);
    chart.helm(&["lint", "--strict", dir, "-f", all_on]);

    let default = chart.render(&[]);
    let every = chart.render(&["-f", all_on]);
    assert_eq!(
        kinds(&docs(&default)),
        ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"]
            .map(String::from)
            .into(),
        "the default renders no custom resource and no dashboard"
    );
    assert_eq!(
        kinds(&docs(&every)),
        [
            "ConfigMap",
            "DaemonSet",
            "PodMonitor",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
        .map(String::from)
        .into()
    );
    let every_docs = docs(&every);
    let dashboards: Vec<&Value> = every_docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert!(
        !dashboards.is_empty(),
        "no dashboard ConfigMap carries grafana_dashboard: \"1\""
    );
    let rule = find(&every_docs, "PrometheusRule");
    assert!(
        rule["spec"]["groups"][0]["rules"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "the PrometheusRule carries no rule from alerts/tracepkt.rules.yml: {rule}"
    );

    // Offline schema checks: Kubernetes' own for built-in kinds (oldest supported and newest),
    // the prometheus-operator models for the custom resources.
    let tmp = TempDir::new("chart-validate");
    let (a, b) = (tmp.path("default.yaml"), tmp.path("all-on.yaml"));
    common::write(&a, &default);
    common::write(&b, &every);
    let out = Command::new(&python)
        .arg(repo().join("scripts/validate-manifests.py"))
        .args(["-k", "1.25", "-k", "1.37"])
        .args([&a, &b])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(out.status.success(), "invalid manifests:\n{report}");
    assert!(report.contains("PrometheusRule") && report.contains("prometheus-operator model"));

    // The packaged chart carries the linked files themselves, not links.
    chart.helm(&["package", dir, "-d", tmp.path("").to_str().unwrap()]);
    let listing = common::sh(&format!("tar tzvf {}/tracepkt-*.tgz", tmp.path("").display()));
    assert!(listing.contains("tracepkt/alerts/tracepkt.rules.yml"), "{listing}");
    assert!(
        listing.contains("tracepkt/dashboards/") && listing.contains(".json"),
        "{listing}"
    );
    assert!(
        !listing.lines().any(|l| l.starts_with('l')),
        "links in the package:\n{listing}"
    );
}

#[test]
fn chart_turns_cross_node_on() {
    let test = "chart_turns_cross_node_on";
    let Some(chart) = Chart::new(test) else { return };
    let on = ["--set", "config.cross_node.enabled=true"];
    // A node that only follows the others' probes has no target of its own.
    let rendered = docs(&chart.render(&[&on[..], &["--set", "config.targets=null"]].concat()));
    let map = rendered
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["config.yaml"].is_string())
        .expect("the config ConfigMap");
    let config: Value = serde_norway::from_str(map["data"]["config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(config["cross_node"]["enabled"], true, "{config:?}");
    assert_eq!(config["targets"].as_array().map(|t| t.len()), Some(0), "{config:?}");
    assert!(
        config.get("attach").is_none(),
        "attach left to tracepkt's default with cross_node: {config:?}"
    );
    let dir = chart.dir();
    let out = Command::new(&chart.helm)
        .args(["template", "tpk", dir.to_str().unwrap()])
        .args(on)
        .args(["--set", "config.attach=in-flight"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("config.cross_node needs the programs attached all the time"),
        "{err}"
    );
}

#[test]
fn chart_grants_least_privilege() {
    let test = "chart_grants_least_privilege";
    let Some(chart) = Chart::new(test) else { return };
    let all_on = chart.all_on();
    let cases: [(&str, Vec<&str>, Vec<&str>); 4] = [
        ("default", vec![], CHART_CAPS.to_vec()),
        (
            "sysAdmin",
            vec!["--set", "securityContext.sysAdmin=true"],
            [&CHART_CAPS[..], &["SYS_ADMIN"]].concat(),
        ),
        (
            "podNames",
            vec!["--set", "podNames.enabled=true"],
            [&CHART_CAPS[..], &["SYS_PTRACE"]].concat(),
        ),
        (
            "all-on",
            vec!["-f", all_on.to_str().unwrap()],
            [&CHART_CAPS[..], &["SYS_PTRACE", "SYS_ADMIN"]].concat(),
        ),
    ];
    for (name, args, caps) in cases {
        let rendered = chart.render(&args);
        let docs = docs(&rendered);
        let mut p = Vec::new();
        docs.iter().for_each(|d| privileged(d, &mut p));
        assert!(p.iter().all(|v| *v == Value::Bool(false)), "{name}: privileged {p:?}");
        let c = container(&docs);
        let sc = &c["securityContext"];
        assert_eq!(added_caps(&docs), caps, "{name}: capabilities added");
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["runAsUser"], 0, "{name}");
        let pod = &find(&docs, "DaemonSet")["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true, "{name}");
        assert_eq!(
            pod["hostPID"] == true,
            caps.contains(&"SYS_PTRACE"),
            "{name}: hostPID only for pod names"
        );
        let host_volumes: BTreeSet<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.get("hostPath").is_some())
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(!host_volumes.is_empty());
        for m in c["volumeMounts"].as_array().unwrap() {
            if host_volumes.contains(m["name"].as_str().unwrap()) {
                assert_eq!(m["readOnly"], true, "{name}: host path mounted writable: {m}");
            }
        }
        let paths: BTreeSet<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["hostPath"]["path"].as_str())
            .collect();
        let mut expected: BTreeSet<&str> = ["/run/netns", "/sys/kernel/btf", "/sys/kernel/tracing"].into();
        if caps.contains(&"SYS_PTRACE") {
            expected.insert("/var/log/pods");
        }
        assert_eq!(paths, expected, "{name}: host paths");
    }

    // The image runs what the pod spec says it runs, as the user it says.
    let containerfile = std::fs::read_to_string(repo().join("Containerfile")).unwrap();
    let entrypoint = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("Containerfile has an ENTRYPOINT");
    let entrypoint: Value = serde_json::from_str(entrypoint).unwrap();
    let docs = docs(&chart.render(&[]));
    assert_eq!(container(&docs)["command"], entrypoint);
    assert!(containerfile.lines().any(|l| l.trim() == "USER 0:0"));
    assert!(containerfile.lines().any(|l| l.trim() == "FROM scratch"));
}

/// What the container would run: the DaemonSet's command and arguments, its environment, and
/// the ConfigMap's config.yaml written where the arguments point.
struct Pod {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    caps: Vec<String>,
    port: u16,
    _dir: TempDir,
}

impl Pod {
    fn rendered(chart: &Chart, tag: &str) -> Pod {
        let port = common::free_port();
        // Loopback only: the probes go to 127.0.0.1 (the chart's default target) and the
        // listener stays on this machine.
        let rendered = chart.render(&[
            "--set",
            &format!("metrics.port={port}"),
            "--set",
            "metrics.bindAddress=127.0.0.1",
            "--set",
            "config.interval=1s",
            "--set",
            "config.timeout=500ms",
        ]);
        let docs = docs(&rendered);
        let dir = TempDir::new(tag);
        let config = find(&docs, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            config.contains("address: 127.0.0.1"),
            "the chart's default target: {config}"
        );
        let c = container(&docs);
        let mut argv: Vec<String> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(c["args"].as_array().unwrap())
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(argv[0], "/usr/bin/tracepkt", "the image's binary");
        argv[0] = common::BIN.to_string();
        // The ConfigMap is mounted at /etc/tracepkt; here it is a file in the scratch dir.
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "config")
            .unwrap()["mountPath"]
            .as_str()
            .unwrap()
            .to_string();
        let cfg = dir.path("config.yaml");
        common::write(&cfg, &config);
        let mut replaced = 0;
        for a in argv.iter_mut() {
            if let Some(rest) = a.strip_prefix(&format!("{mount}/")) {
                assert_eq!(rest, "config.yaml");
                *a = cfg.to_str().unwrap().to_string();
                replaced += 1;
            }
        }
        assert_eq!(replaced, 1, "the arguments name the mounted config once: {argv:?}");
        let env = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_string();
                let value = match e.get("value") {
                    Some(v) => v.as_str().unwrap().to_string(),
                    None if e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" => "tpkch-node".into(),
                    None => panic!("an env var the test cannot fill: {e}"),
                };
                (name, value)
            })
            .collect();
        Pod {
            argv,
            env,
            caps: added_caps(&docs),
            port,
            _dir: dir,
        }
    }

    /// Starts it with exactly `caps` (container names: BPF, NET_RAW...) in every set, as root.
    fn start(&self, caps: &[String], log: &Path) -> Proc {
        let set = std::iter::once("-all".to_string())
            .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        // Root's exec keeps what the bounding set allows; the inheritable and ambient sets are
        // set too so that the effective set is exactly `caps` whatever the securebits.
        let child = Command::new("setpriv")
            .arg(format!("--bounding-set={set}"))
            .arg(format!("--inh-caps={set}"))
            .arg(format!("--ambient-caps={set}"))
            .args(&self.argv)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start setpriv");
        Proc(child)
    }
}

/// Capability numbers (linux/capability.h) of container capability names.
fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| match c.as_str() {
            "NET_ADMIN" => 12,
            "NET_RAW" => 13,
            "SYS_PTRACE" => 19,
            "SYS_ADMIN" => 21,
            "PERFMON" => 38,
            "BPF" => 39,
            other => panic!("capability {other} not known to the test"),
        })
        .fold(0, |m, bit| m | 1u64 << bit)
}

fn cap_eff(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The pid of tracepkt under setpriv (setpriv execs it, so it is the same process).
fn wait_cap_eff(p: &Proc, want: u64, log: &Path) {
    let pid = p.0.id();
    let got = common::wait_for(10, "the process's CapEff", log, || {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        (exe == Path::new(common::BIN)).then(|| cap_eff(pid)).flatten()
    });
    assert_eq!(got, want, "CapEff {got:#x}, wanted exactly {want:#x}");
}

fn have_setpriv(test: &str) -> bool {
    if Command::new("setpriv").arg("--version").output().is_ok() {
        return true;
    }
    common::skip(test, "setpriv (util-linux) is not installed");
    false
}

#[test]
fn runs_with_exactly_the_chart_capabilities() {
    let test = "runs_with_exactly_the_chart_capabilities";
    require_privileges!(test);
    if !have_setpriv(test) {
        return;
    }
    let Some(chart) = Chart::new(test) else { return };
    let pod = Pod::rendered(&chart, "chart-caps");
    assert_eq!(pod.caps, CHART_CAPS.map(String::from).to_vec());
    let tmp = TempDir::new("chart-caps-log");
    let log = tmp.path("tracepkt.log");
    let p = pod.start(&pod.caps, &log);
    wait_cap_eff(&p, cap_mask(&pod.caps), &log);
    let metrics = common::wait_for(60, "a loopback probe answered", &log, || {
        let m = common::scrape(pod.port);
        (common::sample(&m, "tracepkt_probe_success{target=\"loopback\"}") == Some(1.0)).then_some(m)
    });
    let attached: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tracepkt_program_attached{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(attached > 0.0, "no program attached:\n{metrics}\n{logged}");
    assert!(!logged.contains("missing capability"), "{logged}");
    println!(
        "kernel {}: with {:?} only, {attached} hooks attached and the loopback probe was answered",
        common::kernel(),
        pod.caps
    );
}

#[test]
fn missing_perfmon_is_named() {
    let test = "missing_perfmon_is_named";
    require_privileges!(test);
    if !have_setpriv(test) {
        return;
    }
    let Some(chart) = Chart::new(test) else { return };
    let pod = Pod::rendered(&chart, "chart-noperfmon");
    let caps: Vec<String> = pod.caps.iter().filter(|c| *c != "PERFMON").cloned().collect();
    let tmp = TempDir::new("chart-noperfmon-log");
    let log = tmp.path("tracepkt.log");
    let mut p = pod.start(&caps, &log);
    wait_cap_eff(&p, cap_mask(&caps), &log);
    // With no interface hook attached, serve gives up: wait for it to exit.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tracepkt kept running without CAP_PERFMON");
        std::thread::sleep(Duration::from_millis(200));
    };
    let logged = std::fs::read_to_string(&log).unwrap();
    println!("kernel {}: without CAP_PERFMON, {status}:\n{logged}", common::kernel());
    assert!(!status.success());
    assert!(
        logged.contains("missing capability CAP_PERFMON: tracepkt needs it"),
        "no start-up line names CAP_PERFMON:\n{logged}"
    );
    assert!(
        logged.contains("not permitted: missing capability CAP_PERFMON"),
        "the hooks' errors do not name CAP_PERFMON:\n{logged}"
    );
    assert!(!logged.contains("locked down"), "the kernel is blamed:\n{logged}");
}
