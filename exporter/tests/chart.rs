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
const CHART_CAPS: [&str; 3] = ["BPF", "PERFMON", "NET_RAW"];

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

    /// Runs helm expecting it to fail; its stdout and stderr together.
    fn helm_fails(&self, args: &[&str]) -> String {
        let out = Command::new(&self.helm).args(args).output().expect("run helm");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "helm {args:?} succeeded:\n{text}");
        text
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
    let venv = venv();
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

fn pod_template(docs: &[Value]) -> &Value {
    &find(docs, "DaemonSet")["spec"]["template"]
}

/// A chart release that changes nothing in the pod must not roll the pods on every node: the
/// pod template, labels included, is the same after a chart version bump.
#[test]
fn pod_template_is_unchanged_by_a_chart_version_bump() {
    let test = "pod_template_is_unchanged_by_a_chart_version_bump";
    let Some(chart) = Chart::new(test) else { return };
    let all_on = chart.all_on();
    let all_on = all_on.to_str().unwrap();
    let before = [docs(&chart.render(&[])), docs(&chart.render(&["-f", all_on]))];
    let manifest = chart.dir().join("Chart.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .expect("Chart.yaml has a version")
        .trim()
        .to_string();
    common::write(
        &manifest,
        &text.replace(&format!("version: {version}"), "version: 99.1.0"),
    );
    let after = [docs(&chart.render(&[])), docs(&chart.render(&["-f", all_on]))];
    for (name, (b, a)) in ["default", "all-on"].iter().zip(before.iter().zip(&after)) {
        let chart_label = |d: &[Value]| find(d, "DaemonSet")["metadata"]["labels"]["helm.sh/chart"].clone();
        assert_eq!(chart_label(b), format!("tracepkt-{version}").as_str(), "{name}");
        assert_eq!(chart_label(a), "tracepkt-99.1.0", "{name}: the bump is seen");
        let labels = &pod_template(a)["metadata"]["labels"];
        assert!(
            labels.get("helm.sh/chart").is_none(),
            "{name}: the chart version is on the pod: {labels}"
        );
        assert_eq!(
            pod_template(b),
            pod_template(a),
            "{name}: the pod template changed with the chart version"
        );
        // The selector's labels are on the pod (or the DaemonSet would select nothing).
        let selector = find(a, "DaemonSet")["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{name}: selector label {k}");
        }
    }
}

/// `helm lint --strict` and `helm template` with `args` must both fail, naming `wants` (each).
fn refused(chart: &Chart, args: &[&str], wants: &[&str]) -> String {
    let dir = chart.dir();
    let dir = dir.to_str().unwrap();
    let mut out = String::new();
    for cmd in [&["lint", "--strict", dir][..], &["template", "tpk", dir][..]] {
        let text = chart.helm_fails(&[cmd, args].concat());
        for want in wants {
            assert!(
                text.contains(want),
                "helm {cmd:?} {args:?}: no {want:?} in its message:\n{text}"
            );
        }
        out = text;
    }
    out
}

/// values.schema.json refuses what the chart would otherwise ignore or render into a pod that
/// cannot start: misspelt keys anywhere (the config's targets included), values of the wrong
/// type, a relative runbook URL.
#[test]
fn schema_refuses_bad_values() {
    let test = "schema_refuses_bad_values";
    let Some(chart) = Chart::new(test) else { return };
    let bad_target = chart.tmp.path("bad-target.yaml");
    common::write(
        &bad_target,
        "config:\n  targets:\n    - name: api\n      address: 10.96.0.1\n      protocol: tcp\n      port: 443\n      expect: {no_drops: true}\n",
    );
    let cases: [(&[&str], &[&str]); 10] = [
        (
            &["--set", "serviceMonitor.enable=true"],
            &["/serviceMonitor", "'enable'"],
        ),
        (&["--set", "metrics.port=abc"], &["/metrics/port", "integer"]),
        (&["--set", "metrics.port=70000"], &["/metrics/port"]),
        (
            &["--set", "config.targets[0].adress=10.0.0.1"],
            &["/config/targets/0", "'adress'"],
        ),
        (
            &["-f", bad_target.to_str().unwrap()],
            &["/config/targets/0/expect", "'no_drops'"],
        ),
        (
            &["--set", "config.targets[0].protocol=icmpp"],
            &["/config/targets/0/protocol"],
        ),
        (&["--set", "config.interval=10"], &["/config/interval"]),
        (
            &["--set", "config.cross_node.budjet=10"],
            &["/config/cross_node", "'budjet'"],
        ),
        (&["--set", "image.digest=latest"], &["/image/digest"]),
        (
            &["--set", "prometheusRule.runbookUrlPattern=docs/runbook.md#%s"],
            &["/prometheusRule/runbookUrlPattern"],
        ),
    ];
    for (args, wants) in cases {
        let text = refused(&chart, args, wants);
        println!(
            "{args:?}: {}",
            text.lines().find(|l| l.contains("- at ")).unwrap_or_default().trim()
        );
    }
    // What the chart refuses itself, with its own message: the schema lets it through. (helm
    // lint reports a template's fail() as information only, so this is helm template's.)
    let dir = chart.dir();
    let text = chart.helm_fails(&[
        "template",
        "tpk",
        dir.to_str().unwrap(),
        "--set",
        "config.listen=0.0.0.0:1",
    ]);
    assert!(
        text.contains("config.listen: set metrics.port and metrics.bindAddress instead"),
        "{text}"
    );
}

/// Every key the README's configuration example uses, and the shipped config.example.yaml,
/// pass the schema and reach tracepkt's config as given: the schema is not stricter than
/// tracepkt on anything documented.
#[test]
fn schema_accepts_every_documented_config_key() {
    let test = "schema_accepts_every_documented_config_key";
    let Some(chart) = Chart::new(test) else { return };
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme.find("### Configuration").expect("README: ### Configuration")..];
    let block = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("README: the configuration example")
        .0;
    let example = std::fs::read_to_string(repo().join("config.example.yaml")).unwrap();
    for (name, text) in [("README", block), ("config.example.yaml", example.as_str())] {
        let mut config: Value = serde_norway::from_str(text).unwrap();
        let c = config.as_object_mut().unwrap();
        // Set from the chart's own values, and refused under config.
        c.remove("listen");
        c.remove("otlp");
        // The README shows `attach: in-flight` and cross_node side by side; one chart install
        // has one of them.
        if c.get("cross_node").is_some() {
            c.remove("attach");
        }
        let values = chart.tmp.path(&format!("{name}.values.yaml"));
        common::write(
            &values,
            &serde_norway::to_string(&serde_json::json!({"config": config})).unwrap(),
        );
        let dir = chart.dir();
        chart.helm(&[
            "lint",
            "--strict",
            dir.to_str().unwrap(),
            "-f",
            values.to_str().unwrap(),
        ]);
        let rendered = docs(&chart.render(&["-f", values.to_str().unwrap()]));
        let map = rendered
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"]["config.yaml"].is_string())
            .unwrap();
        let mut got: Value = serde_norway::from_str(map["data"]["config.yaml"].as_str().unwrap()).unwrap();
        got.as_object_mut().unwrap().remove("listen");
        assert_eq!(got, config, "{name}: the config tracepkt gets is not the one given");
        let targets = config["targets"].as_array().map_or(0, Vec::len);
        println!(
            "{name}: {} keys, {targets} targets accepted",
            config.as_object().unwrap().len()
        );
    }
}

/// The image reference, the priority class, the CPU limit, the scrape job's name and the
/// runbook links, as rendered.
#[test]
fn chart_renders_image_priority_resources_job_and_runbooks() {
    let test = "chart_renders_image_priority_resources_job_and_runbooks";
    let Some(chart) = Chart::new(test) else { return };
    let all_on = chart.all_on();
    let all_on = all_on.to_str().unwrap();
    let default = docs(&chart.render(&[]));
    let every = docs(&chart.render(&["-f", all_on]));

    let image = |d: &[Value]| container(d)["image"].as_str().unwrap().to_string();
    let app_version = std::fs::read_to_string(chart.dir().join("Chart.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .unwrap()
        .trim_matches(|c| c == '"' || c == ' ')
        .to_string();
    assert_eq!(image(&default), format!("localhost/tracepkt:{app_version}"));
    assert_eq!(
        image(&every),
        "registry.example/network/tracepkt:9.9.9@sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270"
    );
    let bare = docs(&chart.render(&["--set", "image.registry=", "--set", "image.tag=1.2.3"]));
    assert_eq!(image(&bare), "tracepkt:1.2.3");

    // No priority class unless one is asked for.
    let pod = |d: &[Value]| pod_template(d)["spec"].clone();
    assert!(pod(&default).get("priorityClassName").is_none(), "{}", pod(&default));
    let critical = docs(&chart.render(&["--set", "priorityClassName=system-node-critical"]));
    assert_eq!(pod(&critical)["priorityClassName"], "system-node-critical");

    let limits = &container(&default)["resources"]["limits"];
    assert_eq!((&limits["cpu"], &limits["memory"]), (&"500m".into(), &"256Mi".into()));

    // The monitors name the job after the pods' and the Service's part-of label, which is
    // the job the alert rules select.
    let rules = std::fs::read_to_string(repo().join("alerts/tracepkt.rules.yml")).unwrap();
    let job_in_rules: BTreeSet<&str> = rules
        .match_indices("up{job=\"")
        .map(|(i, _)| {
            let rest = &rules[i + 8..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(job_in_rules.len(), 1, "one job in the rules: {job_in_rules:?}");
    let job = *job_in_rules.iter().next().unwrap();
    let label = "app.kubernetes.io/part-of";
    assert_eq!(pod_template(&every)["metadata"]["labels"][label], job);
    assert_eq!(find(&every, "Service")["metadata"]["labels"][label], job);
    for kind in ["ServiceMonitor", "PodMonitor"] {
        assert_eq!(find(&every, kind)["spec"]["jobLabel"], label, "{kind}");
    }
    // Whatever the release and name overrides: every-on has nameOverride and fullnameOverride.
    assert_ne!(find(&every, "DaemonSet")["metadata"]["name"], job);

    // runbook_url: absolute, from the pattern, to the alert's section of docs/runbook.md.
    let values: Value =
        serde_norway::from_str(&std::fs::read_to_string(chart.dir().join("values.yaml")).unwrap()).unwrap();
    let default_pattern = values["prometheusRule"]["runbookUrlPattern"]
        .as_str()
        .unwrap()
        .to_string();
    let file: Value = serde_norway::from_str(&rules).unwrap();
    for (pattern, extra) in [
        (default_pattern.as_str(), vec!["--set", "prometheusRule.enabled=true"]),
        ("https://docs.example/tracepkt/runbook#%s", vec!["-f", all_on]),
    ] {
        let rendered = docs(&chart.render(&extra));
        let groups = &find(&rendered, "PrometheusRule")["spec"]["groups"];
        let mut n = 0;
        for (g, fg) in groups
            .as_array()
            .unwrap()
            .iter()
            .zip(file["groups"].as_array().unwrap())
        {
            for (r, fr) in g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .zip(fg["rules"].as_array().unwrap())
            {
                let alert = r["alert"].as_str().unwrap();
                let want = pattern.replace("%s", &alert.to_lowercase());
                assert_eq!(r["annotations"]["runbook_url"], want.as_str(), "{alert}");
                if pattern == default_pattern {
                    // The plain rules file carries the same links as the chart's default.
                    assert_eq!(fr["annotations"]["runbook_url"], want.as_str(), "{alert} in the file");
                }
                assert_eq!(r["expr"], fr["expr"], "{alert}: the chart changed the expression");
                n += 1;
            }
        }
        assert!(n >= 12, "{n} alerts");
    }
}

/// checkov's findings that tracepkt needs, and why; any other finding fails the test.
const CHECKOV_ACCEPTED: [(&str, &str); 10] = [
    (
        "CKV_K8S_19",
        "hostNetwork: probes leave from the node, as the node's own traffic does",
    ),
    (
        "CKV_K8S_17",
        "hostPID, with podNames only: naming namespaces after the pods in them",
    ),
    ("CKV_K8S_23", "uid 0: Kubernetes grants added capabilities to root only"),
    ("CKV_K8S_40", "uid 0, as above"),
    ("CKV_K8S_25", "added capabilities: BPF, PERFMON and NET_RAW, no more"),
    (
        "CKV_K8S_39",
        "SYS_ADMIN, with securityContext.sysAdmin only (kernels before 5.8, from:)",
    ),
    (
        "CKV_K8S_31",
        "seccomp Unconfined, only where asked (securityContext.seccompProfile)",
    ),
    (
        "CKV_K8S_15",
        "pull policy IfNotPresent by default: the tag is a release's, or a digest is given",
    ),
    (
        "CKV_K8S_43",
        "no digest by default: a build of one's own has none yet (image.digest)",
    ),
    (
        "CKV2_K8S_6",
        "no NetworkPolicy: a hostNetwork pod is not subject to one",
    ),
];

/// checkov (`TRACEPKT_CHECKOV`, else on PATH, else in the validators' venv); None records
/// the skip.
fn checkov(test: &str, venv: &Path) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("TRACEPKT_CHECKOV").map(PathBuf::from),
        Some(PathBuf::from("checkov")),
        Some(venv.join("bin/checkov")),
    ];
    for c in candidates.into_iter().flatten() {
        if Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    common::skip(
        test,
        "checkov is not installed (pip install checkov, then TRACEPKT_CHECKOV=PATH or put it on PATH)",
    );
    None
}

fn venv() -> PathBuf {
    std::env::var_os("TRACEPKT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tracepkt/venv"))
}

/// checkov on the rendered manifests, defaults and every option on: each finding is one that
/// tracepkt needs (above), and the pod's security context and the CPU limit are among the
/// checks passed.
#[test]
fn checkov_finds_only_what_tracepkt_needs() {
    let test = "checkov_finds_only_what_tracepkt_needs";
    let Some(chart) = Chart::new(test) else { return };
    let Some(checkov) = checkov(test, &venv()) else { return };
    let all_on = chart.all_on();
    for (name, extra) in [("default", vec![]), ("all-on", vec!["-f", all_on.to_str().unwrap()])] {
        let file = chart.tmp.path(&format!("{name}.rendered.yaml"));
        common::write(
            &file,
            &chart.render(&[&["--namespace", "tracepkt"][..], &extra].concat()),
        );
        let out = Command::new(&checkov)
            .args(["--framework", "kubernetes", "-o", "json", "-f"])
            .arg(&file)
            .output()
            .expect("run checkov");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("checkov: not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stderr)));
        let ids = |key: &str| -> BTreeSet<String> {
            report["results"][key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["check_id"].as_str().unwrap().to_string())
                .collect()
        };
        let (failed, passed) = (ids("failed_checks"), ids("passed_checks"));
        println!("{name}: checkov passed {} checks, failed {failed:?}", passed.len());
        let unexpected: Vec<&String> = failed
            .iter()
            .filter(|id| !CHECKOV_ACCEPTED.iter().any(|(a, _)| a == id))
            .collect();
        assert!(unexpected.is_empty(), "{name}: checkov finds {unexpected:?}:\n{report}");
        // CKV_K8S_29: a security context on the pod and its container; CKV_K8S_11: a CPU limit.
        for id in ["CKV_K8S_29", "CKV_K8S_11", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_37"] {
            assert!(
                passed.contains(id),
                "{name}: checkov did not pass {id}: failed {failed:?}"
            );
        }
    }
}

#[test]
fn chart_grants_least_privilege() {
    let test = "chart_grants_least_privilege";
    let Some(chart) = Chart::new(test) else { return };
    let all_on = chart.all_on();
    let cases: [(&str, Vec<&str>, Vec<&str>); 5] = [
        ("default", vec![], CHART_CAPS.to_vec()),
        (
            "netAdmin",
            vec!["--set", "securityContext.netAdmin=true"],
            [&CHART_CAPS[..], &["NET_ADMIN"]].concat(),
        ),
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
            [&CHART_CAPS[..], &["NET_ADMIN", "SYS_PTRACE", "SYS_ADMIN"]].concat(),
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
        // The pod's own context says the same as the container's: root without privileges,
        // and the one seccomp profile.
        let psc = &pod["securityContext"];
        assert_eq!(
            (&psc["runAsUser"], &psc["runAsGroup"], &psc["runAsNonRoot"]),
            (&0.into(), &0.into(), &false.into()),
            "{name}: pod securityContext {psc}"
        );
        assert_eq!(psc["seccompProfile"], sc["seccompProfile"], "{name}");
        assert!(sc["seccompProfile"]["type"].is_string(), "{name}: {sc}");
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

/// A web configuration from a Secret: mounted, passed with `--web-config`, and the probes on
/// HTTPS; the listener on the node's own address only, from the downward API.
#[test]
fn chart_takes_a_web_config_and_binds_to_the_node_address() {
    let test = "chart_takes_a_web_config_and_binds_to_the_node_address";
    let Some(chart) = Chart::new(test) else { return };
    let probe_schemes = |docs: &[Value]| {
        let c = container(docs);
        ["readinessProbe", "livenessProbe"].map(|p| c[p]["httpGet"]["scheme"].as_str().unwrap_or_default().to_owned())
    };
    let plain = docs(&chart.render(&[]));
    let c = container(&plain);
    assert!(!c["args"].to_string().contains("--web-config"), "{c:#}");
    assert!(!c["env"].to_string().contains("TRACEPKT_LISTEN_ADDRESS"), "{c:#}");
    assert_eq!(probe_schemes(&plain), ["HTTP", "HTTP"]);

    let on = docs(&chart.render(&[
        "--set",
        "webConfig.secretName=tpk-web",
        "--set",
        "metrics.nodeAddressOnly=true",
    ]));
    let c = container(&on);
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "serve",
            "--config",
            "/etc/tracepkt/config.yaml",
            "--web-config",
            "/etc/tracepkt/web/web-config.yml"
        ]
    );
    assert_eq!(probe_schemes(&on), ["HTTPS", "HTTPS"]);
    let env = c["env"].as_array().unwrap();
    let listen = env
        .iter()
        .find(|e| e["name"] == "TRACEPKT_LISTEN_ADDRESS")
        .unwrap_or_else(|| panic!("no TRACEPKT_LISTEN_ADDRESS in {env:#?}"));
    assert_eq!(listen["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "web-config")
        .expect("the web config mounted");
    assert_eq!(mount["mountPath"], "/etc/tracepkt/web");
    assert_eq!(mount["readOnly"], true);
    let pod = &find(&on, "DaemonSet")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web-config")
        .expect("the Secret's volume");
    assert_eq!(volume["secret"]["secretName"], "tpk-web");
    assert_eq!(volume["secret"]["defaultMode"], 0o400);

    // A file without TLS (basic auth alone): the probes stay on HTTP.
    let no_tls = docs(&chart.render(&[
        "--set",
        "webConfig.secretName=tpk-web",
        "--set",
        "webConfig.tls=false",
        "--set",
        "webConfig.key=web.yml",
    ]));
    assert_eq!(probe_schemes(&no_tls), ["HTTP", "HTTP"]);
    assert!(
        container(&no_tls)["args"]
            .to_string()
            .contains("/etc/tracepkt/web/web.yml")
    );

    refused(
        &chart,
        &["--set", "webConfig.secretName=Not_A_Name"],
        &["/webConfig/secretName"],
    );
    refused(&chart, &["--set", "webConfig.file=x"], &["/webConfig", "'file'"]);
    refused(
        &chart,
        &["--set", "metrics.nodeAddressOnly=yes"],
        &["/metrics/nodeAddressOnly"],
    );
}
