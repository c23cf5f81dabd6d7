//! Snapshot compilation for 1k, 10k and 100k ServiceDNSRecords: time (criterion) and memory.
//!
//!   cargo bench --bench compile                 # memory table, then criterion timings
//!   cargo bench --bench compile -- 100000       # only the 100k timings (criterion filter)
//!   MERIDIAN_BENCH_MEMORY_ONLY=1 cargo bench --bench compile   # only the memory table
//!
//! The records are generated as `model::Object`s, as the Kubernetes or file source hands them
//! over: one Domain, the demo's three KubeFedClusters, and N ServiceDNSRecords, each in all three
//! clusters with its own load-balancer address per cluster, HTTP-probed — so each record gives
//! 7 names (global, 3 regions, 3 zones) and 3 health endpoints. "build+compile" is
//! `catalog::build` then `snapshot::compile::compile`, the work the publisher does on a change
//! it cannot apply incrementally; "one_change_published" is the common Kubernetes change — one
//! record's load-balancer address moves — redone against the kept build
//! (`snapshot::incremental`) and published (health view, snapshot swap).
//!
//! Memory, printed before the timings:
//! - heap: a counting global allocator (enabled only around the measured call): the peak of
//!   live bytes above the starting point during build+compile, and what stays allocated after
//!   (Catalog + Compiled);
//! - RSS: a child process per size (this binary re-run with MERIDIAN_BENCH_RSS=N) generates the
//!   input, resets its peak RSS (`/proc/self/clear_refs` 5), runs build+compile once, and reports
//!   the peak RSS growth and the process's peak RSS (VmHWM); also that first, cold run's time
//!   and the part of it `catalog::build` took.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meridian::catalog::{self, Inputs};
use meridian::config::Settings;
use meridian::model::{
    ClusterDNS, Domain, KubeFedCluster, KubeFedClusterSpec, KubeFedClusterStatus,
    LoadBalancerIngress, LoadBalancerStatus, Object, ServiceDNSRecord, ServiceDNSRecordSpec,
    ServiceDNSRecordStatus,
};
use meridian::snapshot::compile;
use meridian::snapshot::incremental::{Engine, ObjectChange};
use meridian::snapshot::{HealthView, Snapshot};
use meridian::source::Located;

/// Counts live heap bytes while ENABLED; PEAK is the high-water mark of LIVE.
struct Counting;
static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if ENABLED.load(Ordering::Relaxed) && !p.is_null() {
            add(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        if ENABLED.load(Ordering::Relaxed) {
            add(-(l.size() as isize));
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if ENABLED.load(Ordering::Relaxed) && !q.is_null() {
            add(new as isize - l.size() as isize);
        }
        q
    }
}

fn add(n: isize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const CLUSTERS: [(&str, &str, &str, &str); 3] = [
    ("new-york", "40.7128,-74.0060", "us-east", "nyc1"),
    ("houston", "29.7604,-95.3698", "us-central", "hou1"),
    ("los-angeles", "34.0522,-118.2437", "us-west", "lax1"),
];

fn meta(name: &str, namespace: &str, annotations: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        annotations: (!annotations.is_empty()).then(|| {
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..Default::default()
    }
}

fn located(i: usize, value: Object) -> Located<Object> {
    Located {
        location: format!("bench.yaml:{i} ({})", value.display_name()),
        value,
    }
}

/// One Domain, three clusters and `n` ServiceDNSRecords (loopback addresses: nothing is probed
/// here, but nothing would leave the machine if it were).
pub fn inputs(n: usize) -> Inputs {
    let mut objects = Vec::with_capacity(n + 4);
    objects.push(located(
        0,
        Object::Domain(Domain {
            metadata: meta("demo", "kube-federation-system", &[]),
            domain: "gslb.example.com".to_string(),
            name_server: Some("ns1.gslb.example.com".to_string()),
        }),
    ));
    for (i, (name, loc, region, zone)) in CLUSTERS.iter().enumerate() {
        objects.push(located(
            i + 1,
            Object::KubeFedCluster(KubeFedCluster {
                metadata: meta(
                    name,
                    "kube-federation-system",
                    &[("meridian.io/location", loc)],
                ),
                spec: KubeFedClusterSpec {
                    api_endpoint: format!("https://127.0.0.1:{}", 6443 + i),
                    ..Default::default()
                },
                status: Some(KubeFedClusterStatus {
                    region: Some(region.to_string()),
                    zones: vec![zone.to_string()],
                }),
            }),
        ));
    }
    for i in 0..n {
        let dns = CLUSTERS
            .iter()
            .enumerate()
            .map(|(c, (name, _, region, zone))| {
                let a = 10 + 64 * c + (i >> 16);
                let ip = format!("127.{a}.{}.{}", (i >> 8) & 0xFF, i & 0xFF);
                ClusterDNS {
                    cluster: name.to_string(),
                    region: Some(region.to_string()),
                    zones: vec![zone.to_string()],
                    load_balancer: LoadBalancerStatus {
                        ingress: vec![LoadBalancerIngress {
                            ip: Some(ip),
                            hostname: None,
                        }],
                    },
                }
            })
            .collect();
        objects.push(located(
            i + 4,
            Object::ServiceDNSRecord(ServiceDNSRecord {
                metadata: meta(
                    &format!("svc{i}"),
                    &format!("ns{}", i % 100),
                    &[
                        ("meridian.io/probe", "http"),
                        ("meridian.io/probe-port", "8080"),
                    ],
                ),
                spec: ServiceDNSRecordSpec {
                    domain_ref: "demo".to_string(),
                    record_ttl: Some(60),
                    ..Default::default()
                },
                status: Some(ServiceDNSRecordStatus {
                    domain: Some("gslb.example.com".to_string()),
                    dns,
                }),
            }),
        ));
    }
    Inputs {
        objects,
        ..Default::default()
    }
}

fn build_and_compile(inputs: &Inputs, settings: &Settings) -> compile::Compiled {
    let (cat, errors) = catalog::build(inputs, settings);
    assert!(errors.is_empty(), "generated objects rejected: {errors:?}");
    compile::compile(cat, settings.clone()).expect("compile")
}

fn proc_status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Child mode: one cold build+compile of `n` records, RSS measured around it.
fn rss_child(n: usize) {
    let settings = Settings::default();
    let inputs = inputs(n);
    let before_kb = proc_status_kb("VmRSS:");
    // Reset the peak RSS to the current RSS (Linux >= 4.0).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let t = Instant::now();
    let (cat, errors) = catalog::build(&inputs, &settings);
    assert!(errors.is_empty(), "generated objects rejected: {errors:?}");
    let built = t.elapsed();
    let compiled = compile::compile(cat, settings.clone()).expect("compile");
    let took = t.elapsed();
    let hwm_kb = proc_status_kb("VmHWM:");
    let after_kb = proc_status_kb("VmRSS:");
    println!(
        "{n} {} {} {hwm_kb} {before_kb} {after_kb} {} {} {}",
        took.as_secs_f64() * 1000.0,
        compiled.nodes.len(),
        compiled.endpoints.len(),
        u8::from(reset),
        built.as_secs_f64() * 1000.0,
    );
}

fn memory_report() {
    println!(
        "snapshot compile memory (ServiceDNSRecords x 3 clusters; 7 names and 3 endpoints each)"
    );
    println!(
        "{:>8} {:>9} {:>10} {:>9} {:>14} {:>14} {:>15} {:>14} {:>13}",
        "records",
        "names",
        "cold ms",
        "build ms",
        "heap peak MB",
        "heap kept MB",
        "RSS growth MB",
        "RSS peak MB",
        "input RSS MB"
    );
    let settings = Settings::default();
    let exe = std::env::current_exe().expect("current exe");
    for n in SIZES {
        // Heap, in this process.
        let inputs = inputs(n);
        LIVE.store(0, Ordering::SeqCst);
        PEAK.store(0, Ordering::SeqCst);
        ENABLED.store(true, Ordering::SeqCst);
        let compiled = build_and_compile(&inputs, &settings);
        let kept = LIVE.load(Ordering::SeqCst);
        ENABLED.store(false, Ordering::SeqCst);
        let peak = PEAK.load(Ordering::SeqCst);
        let names = compiled.nodes.len();
        drop(compiled);
        drop(inputs);
        // RSS, in a fresh process.
        let out = std::process::Command::new(&exe)
            .env("MERIDIAN_BENCH_RSS", n.to_string())
            .output()
            .expect("run RSS child");
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<f64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let mb = |kb: f64| kb / 1024.0;
        if f.len() >= 9 {
            // n, ms, names, VmHWM, VmRSS before, VmRSS after, endpoints, reset ok, build ms
            let (ms, hwm, before) = (f[1], f[3], f[4]);
            let reset_ok = f[7] > 0.0;
            println!(
                "{:>8} {:>9} {:>10.1} {:>9.1} {:>14.1} {:>14.1} {:>15} {:>14.1} {:>13.1}",
                n,
                names,
                ms,
                f[8],
                peak as f64 / 1e6,
                kept as f64 / 1e6,
                if reset_ok {
                    format!("{:.1}", mb(hwm - before))
                } else {
                    "n/a".to_string()
                },
                mb(hwm),
                mb(before),
            );
        } else {
            println!(
                "{n:>8}: RSS child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    println!();
}

fn bench(c: &mut Criterion, sizes: &[usize]) {
    let settings = Settings::default();
    for &n in sizes {
        let inputs = inputs(n);
        let mut g = c.benchmark_group("compile");
        g.throughput(Throughput::Elements(n as u64));
        if n >= 10_000 {
            g.sample_size(10);
        }
        g.bench_with_input(BenchmarkId::new("build+compile", n), &inputs, |b, i| {
            b.iter_with_large_drop(|| build_and_compile(black_box(i), &settings))
        });
        g.bench_with_input(BenchmarkId::new("catalog_build", n), &inputs, |b, i| {
            b.iter_with_large_drop(|| catalog::build(black_box(i), &settings))
        });
        let (cat, _) = catalog::build(&inputs, &settings);
        g.bench_function(BenchmarkId::new("compile_only", n), |b| {
            b.iter_batched(
                || cat.clone(),
                |cat| compile::compile(cat, settings.clone()).expect("compile"),
                BatchSize::LargeInput,
            )
        });
        drop(cat);
        bench_one_change(&mut g, &inputs, &settings, n);
        g.finish();
    }
}

/// One record's address moving (back and forth, so every iteration is a change), redone
/// against the kept build and published as the publisher does: a health view over the
/// endpoints and a snapshot swapped in.
fn bench_one_change(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    inputs: &Inputs,
    settings: &Settings,
    n: usize,
) {
    let (errors, engine) =
        Engine::build(&[], || inputs.objects.iter(), &Default::default(), settings);
    assert!(errors.is_empty(), "{errors:?}");
    let mut engine = engine.expect("compile");
    let shared = arc_swap::ArcSwap::from_pointee(Snapshot::new(engine.compiled().clone(), None));
    // The middle record, in two versions.
    let at = 4 + n / 2;
    let a = inputs.objects[at].clone();
    let mut b = a.clone();
    if let Object::ServiceDNSRecord(r) = &mut b.value
        && let Some(st) = &mut r.status
    {
        st.dns[1].load_balancer.ingress[0].ip = Some("127.250.0.1".to_string());
    }
    let mut flip = false;
    let mut step = |engine: &mut Engine| {
        let (old, new) = if flip { (&b, &a) } else { (&a, &b) };
        flip = !flip;
        let c = engine
            .update(
                &[ObjectChange {
                    old: Some(old.clone()),
                    new: Some(new.clone()),
                }],
                &Default::default(),
            )
            .expect("incremental");
        // Health by endpoint id (ids of unchanged endpoints are kept): the served view,
        // extended to new ids.
        let mut endpoint_up = shared.load().health.endpoint_up.clone();
        endpoint_up.resize(c.endpoints.len(), true);
        let health = HealthView {
            endpoint_up,
            cluster_drained: vec![false; c.clusters.len()],
            scoped_drains: Default::default(),
        };
        let mut snap = Snapshot::new(c, None);
        snap.health = std::sync::Arc::new(health);
        shared.swap(std::sync::Arc::new(snap))
    };
    // The first update indexes the kept build (once per full build): not what is measured.
    drop(step(&mut engine));
    g.bench_function(BenchmarkId::new("one_change_published", n), |bench| {
        bench.iter_with_large_drop(|| step(&mut engine))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

/// Benchmark-name filters among the arguments (criterion's own options and their values are
/// not filters).
fn has_filter(args: &[String]) -> bool {
    const WITH_VALUE: [&str; 14] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--noise-threshold",
        "--significance-level",
        "--confidence-level",
        "--nresamples",
        "--profile-time",
        "--color",
        "--output-format",
    ];
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if WITH_VALUE.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            return true;
        }
        i += 1;
    }
    false
}

fn main() {
    if let Ok(n) = std::env::var("MERIDIAN_BENCH_RSS") {
        rss_child(n.parse().expect("MERIDIAN_BENCH_RSS=N"));
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; without it (`cargo test --benches`) criterion runs each
    // benchmark once as a test: only the smallest size then, and no memory report. With a
    // filter someone is after one timing: no memory report either.
    let bench_mode = args.iter().any(|a| a == "--bench");
    if bench_mode && !has_filter(&args) {
        memory_report();
    }
    if std::env::var_os("MERIDIAN_BENCH_MEMORY_ONLY").is_some() {
        return;
    }
    let sizes: &[usize] = if bench_mode { &SIZES } else { &SIZES[..1] };
    let mut c = config();
    bench(&mut c, sizes);
    c.final_summary();
}
