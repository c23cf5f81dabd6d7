//! Every metric meridian exports, in one place. Prefix `meridian_`; labels are bounded (never a
//! client address or a raw query name). Query-path counters are resolved to handles up front so
//! counting is one atomic add.

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::dns::answer::{Answered, Transport};
use crate::dns::wire;
use crate::model::{AllDown, Policy};
use crate::snapshot::Snapshot;

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
}

const QTYPES: [&str; 9] = [
    "A", "AAAA", "CNAME", "SOA", "NS", "TXT", "ANY", "MX", "other",
];
const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

fn qtype_index(t: u16) -> usize {
    match t {
        wire::TYPE_A => 0,
        wire::TYPE_AAAA => 1,
        wire::TYPE_CNAME => 2,
        wire::TYPE_SOA => 3,
        wire::TYPE_NS => 4,
        wire::TYPE_TXT => 5,
        wire::TYPE_ANY => 6,
        15 => 7,
        _ => 8,
    }
}

fn rcode_index(r: u16) -> usize {
    match r {
        0..=5 => r as usize,
        wire::RCODE_BADVERS => 6,
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

        Metrics {
            queries: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_dns_queries_total",
                    "DNS queries answered, by transport, query type and response code."
                ),
                &["transport", "qtype", "rcode"]
            )),
            truncated: reg!(IntCounterVec::new(
                Opts::new(
                    "meridian_dns_truncated_total",
                    "UDP answers sent with TC set."
                ),
                &["transport"]
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
            registry,
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

/// Query counters resolved once per worker (and the per-cluster ones once per catalog):
/// counting is one atomic add, no label lookup and no allocation per query.
pub struct QueryCounters {
    by: Vec<IntCounter>,
    truncated: IntCounter,
    failover: [IntCounter; 4],
    all_down: [IntCounter; 4],
    /// `answers_total{policy, cluster}` by cluster index, then policy; resolved for `catalog`.
    answers: Vec<[IntCounter; 4]>,
    answers_any: [IntCounter; 4],
    catalog: usize,
}

const POLICIES: [Policy; 4] = [Policy::Geo, Policy::Failover, Policy::Weighted, Policy::All];

fn policy_index(p: Policy) -> usize {
    match p {
        Policy::Geo => 0,
        Policy::Failover => 1,
        Policy::Weighted => 2,
        Policy::All => 3,
    }
}

impl QueryCounters {
    pub fn new(transport: Transport) -> QueryCounters {
        let m = get();
        let t = match transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        let mut by = Vec::with_capacity(QTYPES.len() * RCODES.len());
        for q in QTYPES {
            for r in RCODES {
                by.push(m.queries.with_label_values(&[t, q, r]));
            }
        }
        let per_policy = |v: &IntCounterVec, extra: Option<&str>| {
            POLICIES.map(|p| match extra {
                Some(e) => v.with_label_values(&[p.as_str(), e]),
                None => v.with_label_values(&[p.as_str()]),
            })
        };
        QueryCounters {
            by,
            truncated: m.truncated.with_label_values(&[t]),
            failover: per_policy(&m.failover_answers, None),
            all_down: [
                AllDown::All,
                AllDown::Nearest,
                AllDown::Empty,
                AllDown::Servfail,
            ]
            .map(|a| m.all_down_answers.with_label_values(&[a.as_str()])),
            answers: Vec::new(),
            answers_any: per_policy(&m.answers, Some("*")),
            catalog: 0,
        }
    }

    /// Counts one answer given from `snap`.
    pub fn count(&mut self, a: &Answered, snap: &Snapshot) {
        self.by[qtype_index(a.qtype) * RCODES.len() + rcode_index(a.rcode)].inc();
        if a.truncated {
            self.truncated.inc();
        }
        let Some(r) = a.routed else {
            return;
        };
        let c = &snap.compiled;
        let key = Arc::as_ptr(c) as usize;
        if key != self.catalog {
            // A new catalog: resolve its clusters' counters once.
            let m = get();
            self.answers = c
                .clusters
                .iter()
                .map(|cl| POLICIES.map(|p| m.answers.with_label_values(&[p.as_str(), &cl.name])))
                .collect();
            self.catalog = key;
        }
        let p = policy_index(r.policy);
        match r.cluster.and_then(|i| self.answers.get(i as usize)) {
            Some(set) => set[p].inc(),
            None => self.answers_any[p].inc(),
        }
        if r.away_from_nearest {
            self.failover[p].inc();
        }
        if r.all_down {
            let mode = c
                .dyns
                .get(r.dyn_index as usize)
                .map(|d| d.all_down)
                .unwrap_or_default();
            let i = match mode {
                AllDown::All => 0,
                AllDown::Nearest => 1,
                AllDown::Empty => 2,
                AllDown::Servfail => 3,
            };
            self.all_down[i].inc();
        }
        if r.fallback {
            get().cname_fallbacks.inc();
        }
    }
}
