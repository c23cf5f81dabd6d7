//! deploy/ as an operator uses it: the Helm chart (lint, render, schema, a real `helm install` and
//! `helm upgrade` against a real kube-apiserver), the kustomize base and components (built by the
//! real kustomize), and the monitoring bundle (promtool checks and unit-tests the alerts; the
//! dashboard and rules name only metrics that src/metrics.rs defines).
//!
//! Tools: `HELM`, `KUSTOMIZE`, `PROMTOOL` (printed by tests/k8s/provision-tools.sh, which
//! tests/run-all.sh runs). Unset under CI=true is a failure; elsewhere the test runs the script
//! itself (cached: instant after the first time). Nothing is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::k8s::{ADMIN_TOKEN, Env, serial, yaml_docs};

struct Tools {
    helm: PathBuf,
    kustomize: PathBuf,
    promtool: PathBuf,
}

fn tools() -> &'static Tools {
    static T: OnceLock<Tools> = OnceLock::new();
    T.get_or_init(|| {
        let from_env = |k: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .filter(|p| !p.as_os_str().is_empty())
        };
        let keys = ["HELM", "KUSTOMIZE", "PROMTOOL"];
        let mut found: BTreeMap<&str, PathBuf> = keys
            .iter()
            .filter_map(|k| from_env(k).map(|p| (*k, p)))
            .collect();
        if found.len() < keys.len() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "HELM, KUSTOMIZE and PROMTOOL must be set under CI=true (run \
                     tests/k8s/provision-tools.sh and export the paths it prints, as \
                     tests/run-all.sh does); refusing to build them inside a test"
                );
            }
            let out = Command::new("bash")
                .arg(root().join("tests/k8s/provision-tools.sh"))
                .stderr(Stdio::inherit())
                .output()
                .expect("run provision-tools.sh");
            assert!(out.status.success(), "tests/k8s/provision-tools.sh failed");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            for k in keys {
                let p = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .unwrap_or_else(|| panic!("provision-tools.sh printed no {k}: {text}"));
                found.entry(k).or_insert_with(|| PathBuf::from(p));
            }
        }
        for (k, p) in &found {
            assert!(p.is_file(), "{k}={} does not exist", p.display());
        }
        Tools {
            helm: found.remove("HELM").expect("HELM"),
            kustomize: found.remove("KUSTOMIZE").expect("KUSTOMIZE"),
            promtool: found.remove("PROMTOOL").expect("PROMTOOL"),
        }
    })
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> String {
    root().join("deploy/helm/meridian").display().to_string()
}

/// Runs a tool; Ok(stdout) on success, Err(stdout + stderr) otherwise.
fn run(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .current_dir(root())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("meridian-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("meridian-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("meridian-helm-data"),
        )
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr).into_owned()
        ))
    }
}

fn ok(bin: &Path, args: &[&str]) -> String {
    run(bin, args).unwrap_or_else(|e| panic!("{} {}: {e}", bin.display(), args.join(" ")))
}

fn docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("rendered YAML: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of the chart with these --set values (release `m`, namespace `meridian`).
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec!["template", "m", &chart, "--namespace", "meridian"];
    for s in sets {
        args.extend(["--set", s]);
    }
    docs(&ok(&tools().helm, &args))
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| o["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn deployment(objs: &[Value]) -> &Value {
    objs.iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment")
}

/// Memory quantity in MiB (the forms the manifests use: Mi, Gi).
fn mib(q: &Value) -> u64 {
    let s = q.as_str().unwrap_or_else(|| panic!("quantity {q}"));
    if let Some(n) = s.strip_suffix("Gi") {
        n.parse::<u64>().expect("Gi") * 1024
    } else if let Some(n) = s.strip_suffix("Mi") {
        n.parse().expect("Mi")
    } else {
        panic!("unexpected memory quantity {s}")
    }
}

/// What every Deployment we ship must have: zone then node spread (ScheduleAnyway) and a memory
/// limit above the 10k-record peak with headroom (README "Performance": 10k records peak RSS
/// ~85 MB, 100k ~803 MB; 512Mi was the old, too-tight limit).
fn check_pod_basics(d: &Value, what: &str) {
    let spec = &d["spec"]["template"]["spec"];
    let spread = spec["topologySpreadConstraints"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no topologySpreadConstraints"));
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        ["topology.kubernetes.io/zone", "kubernetes.io/hostname"],
        "{what}: spread keys"
    );
    for c in spread {
        assert_eq!(c["whenUnsatisfiable"], "ScheduleAnyway", "{what}: {c}");
        assert_eq!(c["maxSkew"], 1, "{what}: {c}");
        assert!(
            c["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "meridian",
            "{what}: spread selector {c}"
        );
    }
    let meridian = spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "meridian")
        .expect("container meridian");
    let limit = mib(&meridian["resources"]["limits"]["memory"]);
    let request = mib(&meridian["resources"]["requests"]["memory"]);
    assert!(limit >= 1024, "{what}: memory limit {limit}Mi < 1Gi");
    assert!(
        (128..=limit).contains(&request),
        "{what}: memory request {request}Mi"
    );
    // Lame duck: the pod keeps answering while it leaves the endpoints, inside its grace period.
    let args: Vec<&str> = meridian["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Replicas find each other (health by quorum) through a headless Service.
    assert!(
        args.iter()
            .any(|a| a.starts_with("--peers-dns=") && a.contains("-peers.")),
        "{what}: no --peers-dns in {args:?}"
    );
    let lameduck = args
        .iter()
        .find_map(|a| a.strip_prefix("--lameduck="))
        .unwrap_or_else(|| panic!("{what}: no --lameduck in {args:?}"));
    let lameduck_s: u64 = lameduck
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: --lameduck={lameduck} not in whole seconds"));
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: no terminationGracePeriodSeconds"));
    assert!(
        lameduck_s > 0 && grace > lameduck_s + 5,
        "{what}: lameduck {lameduck_s}s must fit in the grace period {grace}s with room to stop"
    );
}

fn container<'a>(d: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    d["spec"]["template"]["spec"][list]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn env_value(c: &Value, name: &str) -> Option<String> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(String::from)
}

const RECOMMENDED: [&str; 6] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
];

#[test]
fn helm_chart_lints_and_renders_every_switch() {
    let t = tools();
    let chart = chart();
    ok(&t.helm, &["lint", &chart]);
    ok(&t.helm, &["lint", "--strict", &chart]);
    let all_on = [
        "geoip.enabled=true",
        "geoip.maxmind.accountId=123456",
        "geoip.maxmind.licenseKey=test-key",
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
        "installExternalDNSCRD=true",
        "kubefed.createNamespace=true",
    ];
    let lint_all: Vec<String> = all_on.iter().map(|s| format!("--set={s}")).collect();
    let mut a = vec!["lint", "--strict", chart.as_str()];
    a.extend(lint_all.iter().map(String::as_str));
    ok(&t.helm, &a);

    // Defaults: the base objects, nothing optional; labels on everything.
    let def = render(&[]);
    let want: BTreeSet<String> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(kinds(&def), want);
    for o in &def {
        let labels = &o["metadata"]["labels"];
        for l in RECOMMENDED.iter().chain(&["helm.sh/chart"]) {
            assert!(
                labels[l].is_string(),
                "{} {}: label {l} missing",
                o["kind"],
                o["metadata"]["name"]
            );
        }
    }
    let d = deployment(&def);
    check_pod_basics(d, "chart defaults");
    let m = container(d, "containers", "meridian").expect("meridian");
    assert!(
        !args(m).iter().any(|a| a.starts_with("--geoip")),
        "no GeoIP by default"
    );
    assert!(d["spec"]["template"]["spec"]["initContainers"].is_null());
    let config = find(&def, "ConfigMap", "m-meridian-config").expect("config");
    let cfg = docs(config["data"]["config.yaml"].as_str().expect("config.yaml"));
    assert_eq!(cfg[0]["kind"], "MeridianConfig");
    assert!(cfg[0]["spec"]["geoip"].is_null());
    // The kubefed CRDs live in crds/ (rendered with --include-crds).
    let with_crds = docs(&ok(&t.helm, &["template", "m", &chart, "--include-crds"]));
    let crd_names: BTreeSet<&str> = with_crds
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for n in [
        "domains.multiclusterdns.kubefed.io",
        "servicednsrecords.multiclusterdns.kubefed.io",
        "ingressdnsrecords.multiclusterdns.kubefed.io",
        "dnsendpoints.multiclusterdns.kubefed.io",
        "kubefedclusters.core.kubefed.io",
        // `auto` cannot look up offline, so helm template renders it.
        "dnsendpoints.externaldns.k8s.io",
    ] {
        assert!(crd_names.contains(n), "CRD {n} missing: {crd_names:?}");
    }
    let ext = find(
        &def,
        "CustomResourceDefinition",
        "dnsendpoints.externaldns.k8s.io",
    )
    .expect("external-dns CRD");
    assert_eq!(
        ext["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstall must not delete every DNSEndpoint"
    );

    // installExternalDNSCRD=false and kubefed.createNamespace=false: neither is rendered.
    let off = render(&[
        "installExternalDNSCRD=false",
        "kubefed.createNamespace=false",
    ]);
    assert!(!kinds(&off).contains("CustomResourceDefinition"));
    assert!(!kinds(&off).contains("Namespace"));

    // Every switch on.
    let all = render(&all_on);
    for k in [
        "ServiceMonitor",
        "PrometheusRule",
        "CustomResourceDefinition",
        "Namespace",
    ] {
        assert!(kinds(&all).contains(k), "{k} missing with every switch on");
    }
    let d = deployment(&all);
    check_pod_basics(d, "chart, every switch on");
    let geo_path = "/var/lib/meridian/geoip/GeoLite2-City.mmdb";
    let cfg = find(&all, "ConfigMap", "m-meridian-config").expect("config");
    let cfg = docs(cfg["data"]["config.yaml"].as_str().expect("config.yaml"));
    assert_eq!(cfg[0]["spec"]["geoip"], geo_path, "config geoip path");
    assert_eq!(
        cfg[0]["spec"]["maxDynamicTTL"], 30,
        "the rest of the config stays"
    );
    let vols = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    let geo_vol = vols
        .iter()
        .find(|v| v["name"] == "geoip")
        .expect("geoip volume");
    assert!(geo_vol["emptyDir"].is_object(), "{geo_vol}");
    let m = container(d, "containers", "meridian").expect("meridian");
    assert!(
        m["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|v| v["name"] == "geoip" && v["readOnly"] == true),
        "meridian mounts the database read-only"
    );
    let init = container(d, "initContainers", "geoipupdate-init").expect("init container");
    let side = container(d, "containers", "geoipupdate").expect("sidecar");
    for (c, freq) in [(init, "0"), (side, "24")] {
        assert!(
            c["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("ghcr.io/maxmind/geoipupdate:")),
            "{c}"
        );
        assert_eq!(env_value(c, "GEOIPUPDATE_FREQUENCY").as_deref(), Some(freq));
        assert_eq!(
            env_value(c, "GEOIPUPDATE_EDITION_IDS").as_deref(),
            Some("GeoLite2-City")
        );
        assert_eq!(
            env_value(c, "GEOIPUPDATE_DB_DIR").as_deref(),
            Some("/var/lib/meridian/geoip")
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    }
    let secret = find(&all, "Secret", "m-meridian-geoip").expect("MaxMind Secret");
    assert!(secret["data"]["account-id"].is_string() && secret["data"]["license-key"].is_string());
    // Edition ids configurable: the file follows the first edition.
    let country = render(&[
        "geoip.enabled=true",
        "geoip.maxmind.existingSecret=mine",
        "geoip.maxmind.editionIds={GeoIP2-Country,GeoLite2-ASN}",
    ]);
    let cfg = find(&country, "ConfigMap", "m-meridian-config").expect("config");
    assert!(
        cfg["data"]["config.yaml"]
            .as_str()
            .is_some_and(|c| c.contains("geoip: /var/lib/meridian/geoip/GeoIP2-Country.mmdb")),
        "{cfg}"
    );
    assert!(
        find(&country, "Secret", "m-meridian-geoip").is_none(),
        "existingSecret is used"
    );
    let init = container(deployment(&country), "initContainers", "geoipupdate-init").expect("init");
    assert_eq!(
        env_value(init, "GEOIPUPDATE_EDITION_IDS").as_deref(),
        Some("GeoIP2-Country GeoLite2-ASN")
    );
    // Your own database on a volume.
    let own = render(&[
        "geoip.enabled=true",
        "geoip.source=volume",
        "geoip.file=dbip-city.mmdb",
        "geoip.volume.persistentVolumeClaim.claimName=geoip",
    ]);
    let d = deployment(&own);
    assert!(container(d, "initContainers", "geoipupdate-init").is_none());
    assert!(container(d, "containers", "geoipupdate").is_none());
    let vols = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(
        vols.iter()
            .any(|v| v["name"] == "geoip" && v["persistentVolumeClaim"]["claimName"] == "geoip")
    );

    // The monitoring objects are the bundle's: same rules, same dashboard.
    let rule = all
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("PrometheusRule");
    let source = &yaml_docs(&root().join("deploy/monitoring/rules.yaml"))[0];
    assert_eq!(
        rule["spec"]["groups"], source["groups"],
        "chart rules differ"
    );
    let sm = all
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "admin");
    let dash = find(&all, "ConfigMap", "m-meridian-dashboard").expect("dashboard ConfigMap");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(dash["data"]["meridian.json"].as_str().expect("json"))
            .expect("dashboard ConfigMap holds JSON");
    assert_eq!(shipped, dashboard(), "chart dashboard differs");

    // The schema rejects what the chart would misrender, naming the key.
    for (set, says) in [
        ("replicaCount=0", "/replicaCount"),
        ("installExternalDNSCRD=maybe", "/installExternalDNSCRD"),
        ("resources.limits.memory=lots", "/resources/limits/memory"),
        ("geoip.source=s3", "/geoip/source"),
        ("typo=1", "typo"),
    ] {
        let e = run(&t.helm, &["template", "m", &chart, "--set", set])
            .expect_err(&format!("--set {set} must be rejected"));
        assert!(e.contains(says), "--set {set}: {e}");
    }
    let e = run(
        &t.helm,
        &["template", "m", &chart, "--set", "geoip.enabled=true"],
    )
    .expect_err("GeoIP from MaxMind without credentials");
    assert!(e.contains("geoip.maxmind"), "{e}");
}

/// The configuration the chart renders is one the real binary accepts, and its GeoIP path (an
/// absolute path outside the zones directory) is the file meridian opens: `meridian check` on
/// the rendered ConfigMap with the demo database at that path passes, and fails naming the path
/// when the file is missing (why the chart downloads in an init container before meridian starts).
#[test]
fn chart_config_is_accepted_by_meridian_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let geo_dir = dir.path().join("geoip");
    let zones = dir.path().join("zones");
    std::fs::create_dir_all(&geo_dir).expect("geoip dir");
    std::fs::create_dir_all(&zones).expect("zones dir");
    let domain = "apiVersion: multiclusterdns.kubefed.io/v1alpha1\nkind: Domain\n\
                  metadata: {name: fed, namespace: kube-federation-system}\n\
                  domain: gslb.example.com\nnameServer: ns1.gslb.example.com\n";
    std::fs::write(zones.join("domain.yaml"), domain).expect("domain");
    let mount = format!("geoip.mountPath={}", geo_dir.display());
    let check = |sets: &[&str]| {
        let objs = render(sets);
        let cm = find(&objs, "ConfigMap", "m-meridian-config").expect("config");
        let text = cm["data"]["config.yaml"].as_str().expect("config.yaml");
        std::fs::write(zones.join("config.yaml"), text).expect("config");
        let out = Command::new(crate::common::BIN)
            .args(["check", "--zones"])
            .arg(&zones)
            .output()
            .expect("meridian check");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let (ok_default, said) = check(&[]);
    assert!(ok_default, "default config rejected: {said}");
    let geo = [
        "geoip.enabled=true",
        "geoip.maxmind.existingSecret=mine",
        mount.as_str(),
    ];
    let want = geo_dir.join("GeoLite2-City.mmdb");
    let (ok_missing, said) = check(&geo);
    assert!(!ok_missing, "a missing GeoIP file must be refused");
    assert!(said.contains(&want.display().to_string()), "{said}");
    std::fs::copy(root().join("zones/demo-geoip.mmdb"), &want).expect("copy demo mmdb");
    let (ok_geo, said) = check(&geo);
    assert!(ok_geo, "GeoIP config rejected: {said}");
}

fn dashboard() -> Value {
    let p = root().join("deploy/monitoring/dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("dashboard.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// promtool unit tests of the alerts: per-minute ones, and those that look at days (hourly).
const TEST_FILES: [&str; 2] = [
    "deploy/monitoring/tests.yaml",
    "deploy/monitoring/tests-days.yaml",
];

#[test]
fn monitoring_rules_pass_promtool_and_unit_tests() {
    let t = tools();
    let out = ok(
        &t.promtool,
        &["check", "rules", "deploy/monitoring/rules.yaml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let mut tests = String::new();
    for file in TEST_FILES {
        let out = ok(&t.promtool, &["test", "rules", file]);
        assert!(out.contains("SUCCESS"), "{file}: {out}");
        tests.push_str(&std::fs::read_to_string(root().join(file)).expect("tests"));
    }
    // Every alert has a unit test.
    let rules = &yaml_docs(&root().join("deploy/monitoring/rules.yaml"))[0];
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let a = r["alert"].as_str().expect("alert");
            assert!(
                tests.contains(&format!("alertname: {a}")),
                "alert {a} has no test"
            );
        }
    }
}

/// Metric names `meridian_*` in a text; histogram series suffixes map to their histogram.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("meridian_") {
        let start = i + off;
        let word_start =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start + "meridian_".len();
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        if word_start && end > start + "meridian_".len() {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

#[test]
fn dashboard_and_rules_use_only_existing_metrics() {
    let src = std::fs::read_to_string(root().join("src/metrics.rs")).expect("src/metrics.rs");
    let defined: BTreeSet<String> = metric_names(&src)
        .into_iter()
        .filter(|n| src.contains(&format!("\"{n}\"")))
        .collect();
    assert!(
        defined.len() > 20,
        "found too few metrics in src/metrics.rs: {defined:?}"
    );
    let d = dashboard();
    assert!(
        d["panels"].as_array().is_some_and(|p| p.len() > 10),
        "dashboard has panels"
    );
    let mut exprs = String::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().expect("expr");
            assert!(!e.is_empty());
            exprs.push_str(e);
            exprs.push('\n');
        }
    }
    let files = [
        ("deploy/monitoring/dashboard.json (queries)", exprs),
        (
            "deploy/monitoring/dashboard.json",
            serde_json::to_string(&d).expect("json"),
        ),
        (
            "deploy/monitoring/rules.yaml",
            std::fs::read_to_string(root().join("deploy/monitoring/rules.yaml")).expect("rules"),
        ),
        (
            "deploy/monitoring/tests.yaml",
            std::fs::read_to_string(root().join("deploy/monitoring/tests.yaml")).expect("tests"),
        ),
    ];
    let mut used = BTreeSet::new();
    for (file, text) in &files {
        let names = metric_names(text);
        assert!(!names.is_empty(), "{file} names no metric");
        for n in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|b| defined.contains(*b)))
                .unwrap_or(&n)
                .to_string();
            assert!(
                defined.contains(&base),
                "{file}: {n} is not a metric of src/metrics.rs"
            );
            used.insert(base);
        }
    }
    // The dashboard covers what the operator needs on day one.
    for n in [
        "meridian_dns_queries_total",
        "meridian_answers_total",
        "meridian_failover_answers_total",
        "meridian_endpoint_up",
        "meridian_cluster_drained",
        "meridian_reloads_total",
        "meridian_snapshot_generation",
        "meridian_snapshot_publish_seconds",
        "meridian_source_up",
    ] {
        assert!(used.contains(n), "{n} is on no dashboard panel or alert");
    }
}

/// The chart can read files only from inside itself, so deploy/sync.sh copies the sources of
/// truth into it (and wraps the rules for the Prometheus Operator). A copy that drifted fails here.
#[test]
fn chart_and_bundle_copies_match_their_sources() {
    let d = root().join("deploy");
    let chart = d.join("helm/meridian");
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut pairs = vec![
        (
            d.join("monitoring/rules.yaml"),
            chart.join("files/rules.yaml"),
        ),
        (
            d.join("monitoring/dashboard.json"),
            chart.join("files/dashboard.json"),
        ),
        (
            d.join("components/external-dns-crd/externaldns.k8s.io_dnsendpoints.yaml"),
            chart.join("files/externaldns.k8s.io_dnsendpoints.yaml"),
        ),
    ];
    let mut sources: Vec<PathBuf> = std::fs::read_dir(d.join("crds"))
        .expect("deploy/crds")
        .flatten()
        .map(|e| e.path())
        .collect();
    sources.sort();
    let mut copies: Vec<PathBuf> = std::fs::read_dir(chart.join("crds"))
        .expect("chart crds")
        .flatten()
        .map(|e| e.path())
        .collect();
    copies.sort();
    assert_eq!(
        sources.iter().map(|p| p.file_name()).collect::<Vec<_>>(),
        copies.iter().map(|p| p.file_name()).collect::<Vec<_>>(),
        "chart crds/ differs from deploy/crds/: run deploy/sync.sh"
    );
    pairs.extend(sources.into_iter().zip(copies));
    for (src, copy) in &pairs {
        assert!(
            read(src) == read(copy),
            "{} differs from {}: run deploy/sync.sh",
            copy.display(),
            src.display()
        );
    }
    let rule = &yaml_docs(&d.join("monitoring/prometheusrule.yaml"))[0];
    let source = &yaml_docs(&d.join("monitoring/rules.yaml"))[0];
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"], source["groups"],
        "deploy/monitoring/prometheusrule.yaml differs from rules.yaml: run deploy/sync.sh"
    );
}

/// A kustomize overlay in a temp dir using deploy/ (and its components) by relative path, as an
/// operator's own overlay would.
fn kustomize_overlay(resources: &[&str], components: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let here = dir.path().canonicalize().expect("tempdir path");
    // Relative paths from the overlay to deploy/ (kustomize refuses absolute ones).
    let up = "../".repeat(here.components().count().saturating_sub(1));
    let rel = |p: &str| {
        let abs = root().join(p);
        let abs = abs.canonicalize().unwrap_or(abs);
        format!("{up}{}", abs.display().to_string().trim_start_matches('/'))
    };
    let list = |v: &[&str]| -> Vec<Value> { v.iter().map(|p| json!(rel(p))).collect() };
    let k = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(resources),
        "components": list(components),
    });
    std::fs::write(dir.path().join("kustomization.yaml"), k.to_string()).expect("write overlay");
    let out = ok(
        &tools().kustomize,
        &["build", dir.path().to_str().expect("utf-8")],
    );
    docs(&out)
}

#[test]
fn kustomize_base_components_and_monitoring_build() {
    let t = tools();
    // The base alone: no external-dns CRD (it would overwrite an installed one), labels, image,
    // spread, memory.
    let base = docs(&ok(&t.kustomize, &["build", "deploy"]));
    assert!(
        find(
            &base,
            "CustomResourceDefinition",
            "dnsendpoints.externaldns.k8s.io"
        )
        .is_none(),
        "the base must not install external-dns' DNSEndpoint CRD"
    );
    assert!(
        find(
            &base,
            "CustomResourceDefinition",
            "dnsendpoints.multiclusterdns.kubefed.io"
        )
        .is_some()
    );
    for o in &base {
        for l in RECOMMENDED {
            assert!(
                o["metadata"]["labels"][l].is_string(),
                "{} {}: label {l} missing",
                o["kind"],
                o["metadata"]["name"]
            );
        }
    }
    let d = deployment(&base);
    check_pod_basics(d, "kustomize base");
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "meridian"}),
        "selectors unchanged (immutable on a live Deployment)"
    );
    let m = container(d, "containers", "meridian").expect("meridian");
    assert_eq!(m["image"], "meridian:latest", "kustomize images: sets it");

    // With every component.
    let full = kustomize_overlay(
        &["deploy"],
        &[
            "deploy/components/external-dns-crd",
            "deploy/components/geoip-maxmind",
        ],
    );
    assert!(
        find(
            &full,
            "CustomResourceDefinition",
            "dnsendpoints.externaldns.k8s.io"
        )
        .is_some()
    );
    let d = deployment(&full);
    check_pod_basics(d, "kustomize with components");
    let m = container(d, "containers", "meridian").expect("meridian");
    let a = args(m);
    assert_eq!(
        a.last().map(String::as_str),
        Some("--geoip=/var/lib/meridian/geoip/GeoLite2-City.mmdb"),
        "{a:?}"
    );
    assert!(a.contains(&"serve".to_string()) && a.contains(&"--kubernetes".to_string()));
    let init = container(d, "initContainers", "geoipupdate-init").expect("init");
    assert_eq!(
        env_value(init, "GEOIPUPDATE_FREQUENCY").as_deref(),
        Some("0")
    );
    let side = container(d, "containers", "geoipupdate").expect("sidecar");
    assert_eq!(
        env_value(side, "GEOIPUPDATE_FREQUENCY").as_deref(),
        Some("24")
    );
    let own = kustomize_overlay(&["deploy"], &["deploy/components/geoip-volume"]);
    let d = deployment(&own);
    let vols = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(
        vols.iter()
            .any(|v| v["persistentVolumeClaim"]["claimName"] == "meridian-geoip")
    );
    assert!(container(d, "containers", "geoipupdate").is_none());

    // Monitoring bundle.
    let mon = docs(&ok(&t.kustomize, &["build", "deploy/monitoring"]));
    assert_eq!(
        kinds(&mon),
        ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let cm = find(&mon, "ConfigMap", "meridian-dashboard").expect("dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(cm["data"]["meridian.json"].as_str().expect("json")).expect("JSON");
    assert_eq!(shipped, dashboard());
}

/// The chart against a real kube-apiserver: `helm install` and `helm upgrade` (server-side
/// validation of every object; the Deployment is stored, no kubelet runs it), and the `auto`
/// semantics of installExternalDNSCRD / kubefed.createNamespace: the first release installs the
/// CRD and KubeFed's namespace and keeps them through an upgrade; a second release finds them
/// owned elsewhere and leaves them alone; the kustomize build applies beside it.
#[test]
fn helm_chart_installs_and_upgrades_on_a_real_apiserver() {
    let t = tools();
    let _serial = serial();
    let env = Env::start();
    let host = env.clusters(&["host"]).pop().expect("host");
    let h = host.admin();
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = host.kubeconfig(dir.path(), ADMIN_TOKEN);
    let kc = kc.to_str().expect("utf-8");
    let chart = chart();
    let crd =
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/dnsendpoints.externaldns.k8s.io";
    let owner = |path: &str| -> Option<String> {
        h.get(path).and_then(|o| {
            o["metadata"]["annotations"]["meta.helm.sh/release-name"]
                .as_str()
                .map(String::from)
        })
    };
    assert!(
        h.get(crd).is_none(),
        "a fresh cluster has no external-dns CRD"
    );
    let helm = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--kubeconfig", kc]);
        ok(&t.helm, &a)
    };

    // First release: installs the CRD (absent) and the namespace (absent).
    helm(&[
        "install",
        "one",
        &chart,
        "-n",
        "meridian",
        "--create-namespace",
    ]);
    assert_eq!(
        owner(crd).as_deref(),
        Some("one"),
        "auto installs an absent CRD"
    );
    assert_eq!(
        owner("/api/v1/namespaces/kube-federation-system").as_deref(),
        Some("one")
    );
    let dep = h
        .get("/apis/apps/v1/namespaces/meridian/deployments/one-meridian")
        .expect("Deployment stored");
    check_pod_basics(&dep, "installed Deployment");
    // The CRD serves.
    crate::common::wait_for(
        std::time::Duration::from_secs(30),
        "externaldns.k8s.io DNSEndpoints served",
        || {
            (h.call(
                "GET",
                "/apis/externaldns.k8s.io/v1alpha1/dnsendpoints",
                None,
            )
            .0 == 200)
                .then_some(())
        },
    );
    // An upgrade keeps managing (not deleting) what the install created.
    helm(&[
        "upgrade",
        "one",
        &chart,
        "-n",
        "meridian",
        "--set",
        "replicaCount=3",
    ]);
    assert_eq!(owner(crd).as_deref(), Some("one"), "upgrade keeps the CRD");
    // ...and keeps it in the release (resource-policy keep alone would leave it orphaned).
    let manifest = |release: &str, ns: &str| helm(&["get", "manifest", release, "-n", ns]);
    assert!(
        manifest("one", "meridian").contains("name: dnsendpoints.externaldns.k8s.io"),
        "the CRD left release one on upgrade"
    );
    assert!(h.get("/api/v1/namespaces/kube-federation-system").is_some());
    let dep = h
        .get("/apis/apps/v1/namespaces/meridian/deployments/one-meridian")
        .expect("Deployment");
    assert_eq!(dep["spec"]["replicas"], 3);
    let token = h
        .get("/api/v1/namespaces/meridian/secrets/one-meridian-admin")
        .expect("admin Secret")["data"]["token"]
        .clone();

    // Second release elsewhere: the CRD and namespace are someone else's now, left alone.
    helm(&[
        "install",
        "two",
        &chart,
        "-n",
        "second",
        "--create-namespace",
    ]);
    assert_eq!(
        owner(crd).as_deref(),
        Some("one"),
        "auto leaves another owner's CRD"
    );
    assert!(!manifest("two", "second").contains("name: dnsendpoints.externaldns.k8s.io"));
    assert_eq!(
        owner("/api/v1/namespaces/kube-federation-system").as_deref(),
        Some("one")
    );
    // `true` would take it over: Helm refuses, naming the CRD.
    let e = run(
        &t.helm,
        &[
            "install",
            "three",
            &chart,
            "-n",
            "third",
            "--create-namespace",
            "--set",
            "installExternalDNSCRD=true",
            "--set",
            "kubefed.createNamespace=false",
            "--kubeconfig",
            kc,
        ],
    )
    .expect_err("installExternalDNSCRD=true over another release's CRD");
    assert!(e.contains("dnsendpoints.externaldns.k8s.io"), "{e}");
    // The admin token generated on install survives the upgrade.
    helm(&["upgrade", "one", &chart, "-n", "meridian"]);
    assert_eq!(
        h.get("/api/v1/namespaces/meridian/secrets/one-meridian-admin")
            .expect("admin Secret")["data"]["token"],
        token,
        "the generated admin token is kept across upgrades"
    );

    // The monitoring objects, with minimal stand-ins for the Prometheus Operator's CRDs (their
    // schemas are the operator's business; this checks what Helm and kustomize send is stored).
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ] {
        h.apply_with(
            &json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
                "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "listKind": format!("{kind}List"),
                              "singular": kind.to_lowercase()},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object",
                            "x-kubernetes-preserve-unknown-fields": true}}}]}}),
            false,
        );
        crate::common::wait_for(
            std::time::Duration::from_secs(30),
            &format!("{plural}.monitoring.coreos.com served"),
            || {
                (h.call(
                    "GET",
                    &format!("/apis/monitoring.coreos.com/v1/{plural}"),
                    None,
                )
                .0 == 200)
                    .then_some(())
            },
        );
    }
    helm(&[
        "upgrade",
        "one",
        &chart,
        "-n",
        "meridian",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
    ]);
    let stored = h
        .get("/apis/monitoring.coreos.com/v1/namespaces/meridian/prometheusrules/one-meridian")
        .expect("PrometheusRule stored");
    let source = &yaml_docs(&root().join("deploy/monitoring/rules.yaml"))[0];
    assert_eq!(stored["spec"]["groups"], source["groups"]);
    assert!(
        h.get("/apis/monitoring.coreos.com/v1/namespaces/meridian/servicemonitors/one-meridian")
            .is_some()
    );
    assert!(
        h.get("/api/v1/namespaces/meridian/configmaps/one-meridian-dashboard")
            .is_some()
    );
    for o in docs(&ok(&t.kustomize, &["build", "deploy/monitoring"])) {
        h.apply_with(&o, false);
    }

    // The kustomize build with every component, server-side applied (the Deployment as a dry
    // run), beside the releases.
    let full = kustomize_overlay(
        &["deploy"],
        &[
            "deploy/components/external-dns-crd",
            "deploy/components/geoip-maxmind",
        ],
    );
    for o in &full {
        // The CRD belongs to release `one` here; re-applying it is what the base no longer does.
        if o["kind"] == "CustomResourceDefinition" && o["spec"]["group"] == "externaldns.k8s.io" {
            continue;
        }
        h.apply_with(o, o["kind"] == "Deployment");
    }
}
