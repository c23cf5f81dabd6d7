//! Every metric meridian exports, in one place. Prefix `meridian_`; labels are bounded (never a
//! client address or a raw query name). Query-path counters are resolved to handles up front so
//! counting is one atomic add.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::local::LocalHistogram;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::{AllDown, Policy};

/// `meridian --version`: the package version and the commit it was built from (build.rs).
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MERIDIAN_COMMIT"),
    ")"
);

/// The transport a query came over (the `transport` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What a dynamic name answered, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routed {
    pub dyn_index: u32,
    pub policy: Policy,
    /// Cluster index of a single chosen target.
    pub cluster: Option<u32>,
    /// The chosen cluster is not the nearest one (a failover is in effect for this client).
    pub away_from_nearest: bool,
    pub all_down: bool,
    pub fallback: bool,
}

/// Summary of one answered query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    /// Full (extended) RCODE.
    pub rcode: u16,
    pub qtype: u16,
    pub truncated: bool,
    pub routed: Option<Routed>,
    /// End of the question in the answer (0 when no question was echoed).
    pub question_end: usize,
    /// Index of the served zone the query fell in.
    pub zone: Option<u32>,
}

/// What the query-path counters need of the catalog being served. The snapshot implements it
/// (`snapshot/mod.rs`), so this module imports neither `snapshot` nor `dns`: the types it
/// counts ([`Transport`], [`Answered`]) are its own, and the DNS layer uses them.
pub trait CatalogLabels {
    /// Identity of the compiled catalog (not of the snapshot, which every health change
    /// replaces): the catalog's series are resolved once per catalog.
    fn catalog_id(&self) -> usize;
    /// The `zone` label of each served zone, by zone index.
    fn zone_labels(&self) -> Vec<String>;
    /// The `cluster` label of each cluster, by cluster index.
    fn cluster_labels(&self) -> Vec<String>;
    /// What dynamic name `dyn_index` answers with when all its targets are down.
    fn all_down(&self, dyn_index: u32) -> AllDown;
}

impl<T: CatalogLabels + ?Sized> CatalogLabels for Arc<T> {
    fn catalog_id(&self) -> usize {
        (**self).catalog_id()
    }
    fn zone_labels(&self) -> Vec<String> {
        (**self).zone_labels()
    }
    fn cluster_labels(&self) -> Vec<String> {
        (**self).cluster_labels()
    }
    fn all_down(&self, dyn_index: u32) -> AllDown {
        (**self).all_down(dyn_index)
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub queries: IntCounterVec,
    pub truncated: IntCounterVec,
    pub dropped: IntCounterVec,
    pub answers: IntCounterVec,
    pub failover_answers: IntCounterVec,
    pub all_down_answers: IntCounterVec,
    pub cname_fallbacks: IntCounter,
    pub snapshot_generation: IntGauge,
    pub snapshot_publish: Histogram,
    pub snapshot_names: IntGauge,
    pub source_errors: IntCounterVec,
    pub reloads: IntCounterVec,
    pub endpoint_up: IntGaugeVec,
    pub probe_duration: HistogramVec,
    pub probe_lag: Histogram,
    pub probe_missed: IntCounter,
    pub health_transitions: IntCounterVec,
    pub health_peers: IntGaugeVec,
    pub health_quorum_fallback: IntGauge,
    pub drains: IntCounterVec,
    pub drained: IntGaugeVec,
    pub drain_errors: IntCounterVec,
    pub tcp_connections: IntGauge,
    pub tcp_refused: IntCounterVec,
    pub tcp_evicted: IntCounter,
    pub source_up: IntGaugeVec,
    pub leader: IntGauge,
    pub kubernetes_writes: IntCounterVec,
    pub kubernetes_member_up: IntGaugeVec,
    pub kubernetes_planned_writes: IntGauge,
    pub kubernetes_propagation: Histogram,
    pub rrl: IntCounterVec,
    pub geoip_lookup_errors: IntCounter,
    pub geoip_build_timestamp: IntGauge,
    pub geoip_database: IntGaugeVec,
    pub zone_queries: IntCounterVec,
    pub request_duration: HistogramVec,
    pub request_size: HistogramVec,
    pub response_size: HistogramVec,
    pub build_info: IntGaugeVec,
    /// Query-path handles per transport (index: `transport_index`), resolved once.
    transports: [TransportHandles; 2],
}

/// Query types with a series of their own; everything else counts as "other".
pub const QTYPES: [&str; 18] = [
    "A", "AAAA", "CNAME", "SOA", "NS", "TXT", "ANY", "MX", "SRV", "PTR", "HTTPS", "SVCB", "CAA",
    "DS", "DNSKEY", "AXFR", "IXFR", "other",
];
pub const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];
pub const TRANSPORTS: [&str; 2] = ["udp", "tcp"];
/// The `zone` label of queries outside every served zone (REFUSED, CHAOS, malformed), as
/// CoreDNS labels its catch-all server block.
pub const OUTSIDE_ZONES: &str = ".";

fn qtype_index(t: u16) -> usize {
    // RR type codes (RFC 1035, 3596, 4034, 6844, 9460), in `QTYPES` order.
    match t {
        1 => 0,    // A
        28 => 1,   // AAAA
        5 => 2,    // CNAME
        6 => 3,    // SOA
        2 => 4,    // NS
        16 => 5,   // TXT
        255 => 6,  // ANY
        15 => 7,   // MX
        33 => 8,   // SRV
        12 => 9,   // PTR
        65 => 10,  // HTTPS
        64 => 11,  // SVCB
        257 => 12, // CAA
        43 => 13,  // DS
        48 => 14,  // DNSKEY
        252 => 15, // AXFR
        251 => 16, // IXFR
        _ => 17,
    }
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    }
}

/// Per-transport series of the query path, created (at zero) with the registry.
struct TransportHandles {
    /// `queries_total` by qtype, then rcode.
    by: Vec<IntCounter>,
    truncated: IntCounter,
    duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

/// Latency of an authoritative answer, from packet received to answer sent: tens of
/// microseconds normally, up to a second under overload (CoreDNS's range, finer at the bottom).
const DURATION_BUCKETS: [f64; 15] = [
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
];
/// CoreDNS's size buckets, so the same dashboards apply (511: the classic UDP limit).
const SIZE_BUCKETS: [f64; 14] = [
    0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16000.0, 32000.0,
    48000.0, 64000.0,
];

fn rcode_index(r: u16) -> usize {
    match r {
        0..=5 => r as usize,
        16 => 6, // BADVERS (RFC 6891), an extended RCODE
        _ => 7,
    }
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registered once");
                m
            }};
        }

        let queries = reg!(IntCounterVec::new(
            Opts::new(
                "meridian_dns_queries_total",
                "DNS queries answered, by transport, query type and response code."
            ),
            &["transport", "qtype", "rcode"]
        ));
        let truncated = reg!(IntCounterVec::new(
            Opts::new(
                "meridian_dns_truncated_total",
                "UDP answers sent with TC set."
            ),
            &["transport"]
        ));
        let request_duration = reg!(HistogramVec::new(
            HistogramOpts::new(
                "meridian_dns_request_duration_seconds",
                "Time from a query's packet received to its answer sent, by transport."
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["transport"]
        ));
        let request_size = reg!(HistogramVec::new(
            HistogramOpts::new(
                "meridian_dns_request_size_bytes",
                "Size of answered queries (DNS message, without TCP framing), by transport."
            )
            .buckets(SIZE_BUCKETS.to_vec()),
            &["transport"]
        ));
        let response_size = reg!(HistogramVec::new(
            HistogramOpts::new(
                "meridian_dns_response_size_bytes",
                "Size of answers sent (DNS message, without TCP framing), by transport."
            )
            .buckets(SIZE_BUCKETS.to_vec()),
            &["transport"]
        ));
        // Every bounded query-path series exists from the start, at zero, so `rate()` and
        // `increase()` see the first query.
        let transports = TRANSPORTS.map(|t| {
            let mut by = Vec::with_capacity(QTYPES.len() * RCODES.len());
            for q in QTYPES {
                for r in RCODES {
                    by.push(queries.with_label_values(&[t, q, r]));
                }
            }
            TransportHandles {
                by,
                truncated: truncated.with_label_values(&[t]),
                duration: request_duration.with_label_values(&[t]),
                request_size: request_size.with_label_values(&[t]),
                response_size: response_size.with_label_values(&[t]),
            }
        });
        let build_info = reg!(IntGaugeVec::new(
            Opts::new(
                "meridian_build_info",
                "Always 1; the labels say which build is running."
            ),
            &["version", "commit", "rustc"]
        ));
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                env!("MERIDIAN_COMMIT"),
                env!("MERIDIAN_RUSTC"),
            ])
            .set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(process::ProcessCollector::new()))
            .expect("process collector registered once");

        let m = Metrics {
            queries,
            truncated,
            request_duration,
            request_size,
            response_size,
            build_info,
            transports,
            zone_queries: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_dns_zone_queries_total",
                    "DNS queries answered, by served zone (\".\" outside every zone) and response code."
                ),
                &["zone", "rcode"]
            )),
            dropped: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_dns_dropped_total",
                    "Packets dropped without an answer, by reason."
                ),
                &["reason"]
            )),
            answers: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_answers_total",
                    "Answers for federated names, by policy and chosen cluster (\"*\" for several)."
                ),
                &["policy", "cluster"]
            )),
            failover_answers: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_failover_answers_total",
                    "Geo answers that named a cluster other than the client's nearest, because the nearest was down or drained."
                ),
                &["policy"]
            )),
            all_down_answers: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_all_down_answers_total",
                    "Answers given while every cluster of a name was down or drained, by all-down policy."
                ),
                &["mode"]
            )),
            cname_fallbacks: reg!(IntCounter::new(
                "meridian_cname_fallback_answers_total",
                "Region or zone names answered by CNAME to the wider name because none of their clusters was healthy."
            )),
            snapshot_generation: reg!(IntGauge::new(
                "meridian_snapshot_generation",
                "Generation of the snapshot being served."
            )),
            snapshot_publish: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "meridian_snapshot_publish_seconds",
                    "Time to compile and publish a snapshot."
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0
                ])
            )),
            snapshot_names: reg!(IntGauge::new(
                "meridian_snapshot_names",
                "Owner names in the served snapshot."
            )),
            source_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_source_errors_total",
                    "Objects, files or reloads rejected, by source."
                ),
                &["source"]
            )),
            reloads: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_reloads_total",
                    "Reloads of zones, configuration and GeoIP, by result."
                ),
                &["result"]
            )),
            endpoint_up: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_endpoint_up",
                    "1 if a probed endpoint is up, 0 if down."
                ),
                &["cluster", "endpoint", "probe"]
            )),
            probe_duration: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "meridian_probe_duration_seconds",
                    "Health probe duration, by probe kind and result."
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
                ]),
                &["probe", "result"]
            )),
            probe_lag: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "meridian_probe_start_lag_seconds",
                    "How late probes start after their scheduled time (scheduler or concurrency-cap backlog)."
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
            )),
            probe_missed: reg!(IntCounter::with_opts(Opts::new(
                "meridian_probe_intervals_missed_total",
                "Probe intervals that passed without a probe: a probe started a whole interval late, or one outlasted its interval."
            ))),
            health_transitions: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_health_transitions_total",
                    "Endpoint health transitions, by new state."
                ),
                &["to"]
            )),
            health_peers: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_health_peers",
                    "Peers whose health observations this replica combines, by state: fresh (they vote) or stale."
                ),
                &["state"]
            )),
            health_quorum_fallback: reg!(IntGauge::new(
                "meridian_health_quorum_fallback",
                "1 when peers are configured but none is fresh: health is this replica's own view alone."
            )),
            drains: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_drain_events_total",
                    "Cluster drain events: drain, undrain, expire."
                ),
                &["event"]
            )),
            drained: reg!(IntGaugeVec::new(
                Opts::new("meridian_cluster_drained", "1 while a cluster is drained."),
                &["cluster"]
            )),
            drain_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_drain_errors_total",
                    "Drains not applied or not kept: invalid Drain objects (missing, past or too far expiry; unsupported scope) and drains files that cannot be read or written, by source (kubernetes, file)."
                ),
                &["source"]
            )),
            tcp_connections: reg!(IntGauge::new(
                "meridian_dns_tcp_connections",
                "Open DNS-over-TCP connections."
            )),
            tcp_refused: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_dns_tcp_refused_total",
                    "TCP connections refused, by limit."
                ),
                &["limit"]
            )),
            tcp_evicted: reg!(IntCounter::new(
                "meridian_dns_tcp_evicted_total",
                "Idle TCP connections closed to make room for a new one at the total cap."
            )),
            source_up: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_source_up",
                    "1 while a source is connected and synced."
                ),
                &["source"]
            )),
            leader: reg!(IntGauge::new(
                "meridian_leader",
                "1 while this replica holds the leader lease (and so writes to Kubernetes)."
            )),
            kubernetes_writes: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_kubernetes_writes_total",
                    "Writes to the host cluster by the leader, by object (status, dnsendpoint, \
                     dnsendpoint-delete) and result."
                ),
                &["object", "result"]
            )),
            kubernetes_member_up: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_kubernetes_member_up",
                    "1 while a member cluster's API server is listed and watched."
                ),
                &["cluster"]
            )),
            kubernetes_planned_writes: reg!(IntGauge::new(
                "meridian_kubernetes_planned_writes",
                "Writes the last pass found necessary (status or DNSEndpoints differing from the \
                 computed ones); 0 when everything written is current."
            )),
            kubernetes_propagation: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "meridian_kubernetes_propagation_seconds",
                    "From a watch event (host or member) to the changed state handed to the \
                     snapshot publisher."
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
                ])
            )),
            rrl: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_rrl_responses_total",
                    "UDP responses held back by response rate limiting: dropped, or slipped (sent truncated)."
                ),
                &["action"]
            )),
            geoip_lookup_errors: reg!(IntCounter::new(
                "meridian_geoip_lookup_errors_total",
                "GeoIP lookups that failed on a corrupt tree node or record; the client was answered as unlocated."
            )),
            geoip_build_timestamp: reg!(IntGauge::new(
                "meridian_geoip_build_timestamp_seconds",
                "Build time (Unix seconds) of the GeoIP database being served, 0 without one; its age is time() minus this."
            )),
            geoip_database: reg!(IntGaugeVec::new(
                Opts::new(
                    "meridian_geoip_database",
                    "1 for the GeoIP database type being served (GeoIP2-City, GeoLite2-Country, DBIP-City-Lite, ...)."
                ),
                &["type"]
            )),
            registry,
        };
        m.precreate();
        m
    }

    /// Series with a fixed, small label set, created at zero.
    fn precreate(&self) {
        for r in RCODES {
            self.zone_queries.with_label_values(&[OUTSIDE_ZONES, r]);
        }
        self.dropped.with_label_values(&["malformed"]);
        for a in ["dropped", "slipped"] {
            self.rrl.with_label_values(&[a]);
        }
        for l in ["total", "per_source"] {
            self.tcp_refused.with_label_values(&[l]);
        }
        for r in ["ok", "failed"] {
            self.reloads.with_label_values(&[r]);
        }
        for t in ["up", "down"] {
            self.health_transitions.with_label_values(&[t]);
        }
        for s in ["fresh", "stale"] {
            self.health_peers.with_label_values(&[s]);
        }
        for e in ["drain", "undrain", "expire"] {
            self.drains.with_label_values(&[e]);
        }
        for p in Policy::ALL {
            self.failover_answers.with_label_values(&[p.as_str()]);
            self.answers.with_label_values(&[p.as_str(), "*"]);
        }
        for a in AllDown::ALL {
            self.all_down_answers.with_label_values(&[a.as_str()]);
        }
    }

    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Handles that depend on the catalog (its zones and clusters), resolved once per catalog and
/// shared by every worker and connection.
struct CatalogHandles {
    /// `zone_queries_total{zone, rcode}` by zone index, then rcode.
    zones: Vec<[IntCounter; RCODES.len()]>,
    /// `answers_total{policy, cluster}` by cluster index, then policy.
    answers: Vec<[IntCounter; Policy::ALL.len()]>,
}

impl CatalogHandles {
    fn resolve(c: &impl CatalogLabels) -> CatalogHandles {
        let m = get();
        CatalogHandles {
            zones: c
                .zone_labels()
                .iter()
                .map(|zone| RCODES.map(|r| m.zone_queries.with_label_values(&[zone.as_str(), r])))
                .collect(),
            answers: c
                .cluster_labels()
                .iter()
                .map(|cl| Policy::ALL.map(|p| m.answers.with_label_values(&[p.as_str(), cl])))
                .collect(),
        }
    }

    /// The handles for `c`: the last catalog's are kept, so a new TCP connection or a worker
    /// seeing a new catalog resolves labels at most once per catalog in the process.
    fn for_catalog(c: &impl CatalogLabels) -> Arc<CatalogHandles> {
        static LAST: Mutex<Option<(usize, Arc<CatalogHandles>)>> = Mutex::new(None);
        let key = c.catalog_id();
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, h)) = &*last
            && *k == key
        {
            return h.clone();
        }
        let h = Arc::new(CatalogHandles::resolve(c));
        *last = Some((key, h.clone()));
        h
    }
}

/// Query counters resolved once per worker (and the catalog's once per catalog): counting is
/// a few atomic adds, no label lookup, no lock and no allocation per query. The histograms are
/// worker-local and reach the shared ones at `flush`/`maybe_flush` (every `FLUSH_EVERY`
/// answers or `FLUSH_AFTER`, whichever comes first), so workers on different cores do not
/// contend for their cache lines on every query.
pub struct QueryCounters {
    t: &'static TransportHandles,
    duration: LocalHistogram,
    request_size: LocalHistogram,
    response_size: LocalHistogram,
    /// Observations not yet flushed, and when the next flush is due regardless.
    pending: u32,
    flush_due: Instant,
    failover: [IntCounter; Policy::ALL.len()],
    all_down: [IntCounter; AllDown::ALL.len()],
    zone_outside: [IntCounter; RCODES.len()],
    catalog_handles: Option<Arc<CatalogHandles>>,
    answers_any: [IntCounter; Policy::ALL.len()],
    catalog: usize,
}

const FLUSH_EVERY: u32 = 64;
const FLUSH_AFTER: Duration = Duration::from_secs(1);

impl QueryCounters {
    pub fn new(transport: Transport) -> QueryCounters {
        let m = get();
        let per_policy = |v: &IntCounterVec, extra: Option<&str>| {
            Policy::ALL.map(|p| match extra {
                Some(e) => v.with_label_values(&[p.as_str(), e]),
                None => v.with_label_values(&[p.as_str()]),
            })
        };
        let t = &m.transports[transport_index(transport)];
        QueryCounters {
            t,
            duration: t.duration.local(),
            request_size: t.request_size.local(),
            response_size: t.response_size.local(),
            pending: 0,
            flush_due: Instant::now() + FLUSH_AFTER,
            failover: per_policy(&m.failover_answers, None),
            all_down: AllDown::ALL.map(|a| m.all_down_answers.with_label_values(&[a.as_str()])),
            zone_outside: RCODES.map(|r| m.zone_queries.with_label_values(&[OUTSIDE_ZONES, r])),
            catalog_handles: None,
            answers_any: per_policy(&m.answers, Some("*")),
            catalog: 0,
        }
    }

    /// Resolves the per-zone and per-cluster series of `snap`'s catalog (creating them at zero)
    /// unless already done: at start, so a fresh server lists them before its first query.
    pub fn resolve_catalog(&mut self, snap: &impl CatalogLabels) {
        let key = snap.catalog_id();
        if key != self.catalog || self.catalog_handles.is_none() {
            self.catalog_handles = Some(CatalogHandles::for_catalog(snap));
            self.catalog = key;
        }
    }

    /// Counts one answer given from `snap`: `request` and `response` are the DNS message sizes.
    pub fn count(
        &mut self,
        a: &Answered,
        snap: &impl CatalogLabels,
        request: usize,
        response: usize,
    ) {
        let rcode = rcode_index(a.rcode);
        self.t.by[qtype_index(a.qtype) * RCODES.len() + rcode].inc();
        self.request_size.observe(request as f64);
        self.response_size.observe(response as f64);
        self.pending += 1;
        if a.truncated {
            self.t.truncated.inc();
        }
        self.resolve_catalog(snap);
        let Some(h) = self.catalog_handles.as_deref() else {
            return;
        };
        match a.zone.and_then(|z| h.zones.get(z as usize)) {
            Some(z) => z[rcode].inc(),
            None => self.zone_outside[rcode].inc(),
        }
        let Some(r) = a.routed else {
            return;
        };
        let p = r.policy.index();
        match r.cluster.and_then(|i| h.answers.get(i as usize)) {
            Some(set) => set[p].inc(),
            None => self.answers_any[p].inc(),
        }
        if r.away_from_nearest {
            self.failover[p].inc();
        }
        if r.all_down {
            self.all_down[snap.all_down(r.dyn_index).index()].inc();
        }
        if r.fallback {
            get().cname_fallbacks.inc();
        }
    }

    /// Records the time from a query's packet received to its answer sent.
    pub fn answered_in(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Adds the histogram observations made since the last flush to the exported histograms.
    pub fn flush(&mut self) {
        if self.pending > 0 {
            self.duration.flush();
            self.request_size.flush();
            self.response_size.flush();
            self.pending = 0;
        }
    }

    /// Flushes when enough answers or time have gone by: a scrape sees the histograms at most
    /// `FLUSH_AFTER` late (workers also flush whenever they find no packet waiting), while a
    /// busy worker pays for a flush once per `FLUSH_EVERY` answers, not per answer.
    pub fn maybe_flush(&mut self, now: Instant) {
        if self.pending >= FLUSH_EVERY || now >= self.flush_due {
            self.flush();
            self.flush_due = now + FLUSH_AFTER;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qtype_labels_match_their_types() {
        for (code, name) in [
            (1, "A"),
            (28, "AAAA"),
            (5, "CNAME"),
            (6, "SOA"),
            (2, "NS"),
            (16, "TXT"),
            (255, "ANY"),
            (15, "MX"),
            (33, "SRV"),
            (12, "PTR"),
            (65, "HTTPS"),
            (64, "SVCB"),
            (257, "CAA"),
            (43, "DS"),
            (48, "DNSKEY"),
            (252, "AXFR"),
            (251, "IXFR"),
            (99, "other"),
            (0, "other"),
        ] {
            assert_eq!(QTYPES[qtype_index(code)], name, "type {code}");
        }
    }

    #[test]
    fn histograms_reach_the_registry_every_64_answers_or_second() {
        let mut c = QueryCounters::new(Transport::Tcp);
        let count = || {
            get()
                .request_duration
                .with_label_values(&["tcp"])
                .get_sample_count()
        };
        let before = count();
        let start = Instant::now();
        let answer = |c: &mut QueryCounters, now| {
            c.answered_in(Duration::from_micros(30));
            c.pending += 1;
            c.maybe_flush(now);
        };
        for _ in 0..FLUSH_EVERY - 1 {
            answer(&mut c, start);
        }
        assert_eq!(count(), before, "flushed early");
        answer(&mut c, start);
        assert_eq!(count(), before + u64::from(FLUSH_EVERY));
        // A second later one answer is enough.
        answer(&mut c, start + FLUSH_AFTER);
        assert_eq!(count(), before + u64::from(FLUSH_EVERY) + 1);
        // And an idle worker flushes whatever is left.
        c.answered_in(Duration::from_micros(30));
        c.pending += 1;
        c.flush();
        assert_eq!(count(), before + u64::from(FLUSH_EVERY) + 2);
    }
}

/// The standard `process_*` metrics (as the Go and Python clients export them), read from
/// `/proc/self` at scrape time: no extra crate, nothing on the query path.
#[cfg(target_os = "linux")]
mod process {
    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use prometheus::{Counter, Gauge, IntGauge};

    pub struct ProcessCollector {
        descs: Vec<Desc>,
        cpu: Counter,
        rss: IntGauge,
        vsize: IntGauge,
        open_fds: IntGauge,
        max_fds: IntGauge,
        start: Gauge,
        threads: IntGauge,
    }

    impl ProcessCollector {
        pub fn new() -> ProcessCollector {
            let cpu = Counter::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
            )
            .expect("metric definition");
            let g = |name: &str, help: &str| IntGauge::new(name, help).expect("metric definition");
            let rss = g(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            );
            let vsize = g(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            );
            let open_fds = g("process_open_fds", "Number of open file descriptors.");
            let max_fds = g(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            );
            let threads = g("process_threads", "Number of OS threads in the process.");
            let start = Gauge::new(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )
            .expect("metric definition");
            let mut descs = Vec::new();
            descs.extend(cpu.desc().into_iter().cloned());
            for m in [&rss, &vsize, &open_fds, &max_fds, &threads] {
                descs.extend(m.desc().into_iter().cloned());
            }
            descs.extend(start.desc().into_iter().cloned());
            let c = ProcessCollector {
                descs,
                cpu,
                rss,
                vsize,
                open_fds,
                max_fds,
                start,
                threads,
            };
            if let Some(t) = start_time() {
                c.start.set(t);
            }
            c
        }
    }

    /// Fields of /proc/self/stat after the command name (which may hold spaces).
    fn stat_fields(stat: &str) -> Option<Vec<&str>> {
        let rest = &stat[stat.rfind(')')? + 1..];
        Some(rest.split_whitespace().collect())
    }

    fn clock_ticks() -> f64 {
        // SAFETY: sysconf only reads a system constant.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    }

    fn page_size() -> i64 {
        // SAFETY: sysconf only reads a system constant.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 { p as i64 } else { 4096 }
    }

    /// Boot time (`btime` of /proc/stat) plus the process's start, in clock ticks after boot.
    fn start_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Field 22 of stat(5) is starttime; index 19 counting from field 3 (state).
        let ticks: f64 = stat_fields(&stat)?.get(19)?.parse().ok()?;
        let boot: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(boot + ticks / clock_ticks())
    }

    impl Collector for ProcessCollector {
        fn desc(&self) -> Vec<&Desc> {
            self.descs.iter().collect()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
                && let Some(f) = stat_fields(&stat)
            {
                // stat(5) fields 14/15 utime/stime, 20 num_threads, 23 vsize, 24 rss (pages);
                // indexes here count from field 3.
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
                if let (Some(u), Some(s)) = (num(11), num(12)) {
                    let total = (u + s) as f64 / clock_ticks();
                    let past = self.cpu.get();
                    if total > past {
                        self.cpu.inc_by(total - past);
                    }
                }
                if let Some(t) = num(17) {
                    self.threads.set(t as i64);
                }
                if let Some(v) = num(20) {
                    self.vsize.set(v as i64);
                }
                if let Some(r) = num(21) {
                    self.rss.set(r as i64 * page_size());
                }
            }
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                // The directory handle itself is one of the entries.
                self.open_fds.set(dir.count().saturating_sub(1) as i64);
            }
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit only writes the struct passed in.
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
                self.max_fds.set(lim.rlim_cur.min(i64::MAX as u64) as i64);
            }
            let mut v = self.cpu.collect();
            for m in [
                &self.rss,
                &self.vsize,
                &self.open_fds,
                &self.max_fds,
                &self.threads,
            ] {
                v.extend(m.collect());
            }
            v.extend(self.start.collect());
            v
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_this_process() {
            let r = prometheus::Registry::new();
            r.register(Box::new(ProcessCollector::new()))
                .expect("register");
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut buf)
                .expect("encode");
            let text = String::from_utf8(buf).expect("utf8");
            let get = |name: &str| -> f64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .unwrap_or_else(|| panic!("{name} in {text}"))
                    .parse()
                    .expect("number")
            };
            assert!(get("process_resident_memory_bytes") > 0.0);
            assert!(get("process_virtual_memory_bytes") > 0.0);
            assert!(get("process_open_fds") >= 3.0);
            assert!(get("process_max_fds") >= get("process_open_fds"));
            assert!(get("process_start_time_seconds") > 1.6e9);
            assert!(get("process_cpu_seconds_total") >= 0.0);
        }

        #[test]
        fn command_names_with_spaces_and_parens() {
            let f = stat_fields("42 (a b) c) S 1 2 3").expect("fields");
            assert_eq!(f[0], "S");
        }
    }
}
