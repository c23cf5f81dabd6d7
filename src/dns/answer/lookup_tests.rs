//! `respond` in process, as a table (CoreDNS `plugin/file/lookup_test.go` style): each case
//! is a query (name, type, client subnet), a health state (addresses down, clusters drained)
//! and the whole expected answer, every section written as zone-file lines.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

use super::{Transport, respond};
use crate::snapshot::{HealthView, Snapshot};

const ZONE: &str = r#"$TTL 300
@        IN SOA   ns1.gslb.example.com. hostmaster.example.com. 7 7200 3600 1209600 60
         IN NS    ns1.gslb.example.com.
         IN MX    10 mail.example.com.
ns1      IN A     192.0.2.53
static   IN A     192.0.2.10
static   IN AAAA  2001:db8::10
alias    IN CNAME static.gslb.example.com.
chain    IN CNAME alias.gslb.example.com.
docs     IN CNAME www.gslb.example.com.
away     IN CNAME elsewhere.example.net.
*.apps   IN A     192.0.2.20
lab      IN NS    ns1.lab.gslb.example.com.
ns1.lab  IN A     192.0.2.54
"#;

/// Three located clusters (the demo's), and one record per policy and all-down policy. Probes
/// are configured (TCP) but never run: the table sets health.
const OBJECTS: &str = r#"
apiVersion: meridian.io/v1alpha1
kind: MeridianConfig
metadata:
  name: meridian
spec:
  maxDynamicTTL: 30
  health:
    interval: 5s
    timeout: 1s
---
apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: Domain
metadata:
  name: demo
  namespace: kube-federation-system
domain: gslb.example.com
nameServer: ns1.gslb.example.com
---
apiVersion: core.kubefed.io/v1beta1
kind: KubeFedCluster
metadata:
  name: new-york
  namespace: kube-federation-system
  annotations:
    meridian.io/location: "40.7128,-74.0060"
spec:
  apiEndpoint: https://127.0.0.1:6443
  secretRef:
    name: new-york-secret
status:
  region: us-east
  zones: [nyc1]
---
apiVersion: core.kubefed.io/v1beta1
kind: KubeFedCluster
metadata:
  name: houston
  namespace: kube-federation-system
  annotations:
    meridian.io/location: "29.7604,-95.3698"
spec:
  apiEndpoint: https://127.0.0.1:6444
  secretRef:
    name: houston-secret
status:
  region: us-central
  zones: [hou1]
---
apiVersion: core.kubefed.io/v1beta1
kind: KubeFedCluster
metadata:
  name: los-angeles
  namespace: kube-federation-system
  annotations:
    meridian.io/location: "34.0522,-118.2437"
spec:
  apiEndpoint: https://127.0.0.1:6445
  secretRef:
    name: los-angeles-secret
status:
  region: us-west
  zones: [lax1]
"#;

/// One ServiceDNSRecord over the three clusters: NY 203.0.113.1x, Houston .2x, LA .3x, with
/// `n` as the last digit.
fn record(name: &str, n: u8, annotations: &str, extra_spec: &str) -> String {
    format!(
        r#"---
apiVersion: multiclusterdns.kubefed.io/v1alpha1
kind: ServiceDNSRecord
metadata:
  name: {name}
  namespace: shop
  annotations:
    meridian.io/probe: tcp
{annotations}
spec:
  domainRef: demo
  recordTTL: 60
{extra_spec}
status:
  domain: gslb.example.com
  dns:
  - cluster: new-york
    region: us-east
    zones: [nyc1]
    loadBalancer:
      ingress:
      - ip: 203.0.113.1{n}
  - cluster: houston
    region: us-central
    zones: [hou1]
    loadBalancer:
      ingress:
      - ip: 203.0.113.2{n}
  - cluster: los-angeles
    region: us-west
    zones: [lax1]
    loadBalancer:
      ingress:
      - ip: 203.0.113.3{n}
"#
    )
}

/// The compiled fixture, built once: a zone file and YAML objects in a directory, loaded as
/// `meridian serve` loads them, with the demo GeoIP database.
fn fixture() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut y = OBJECTS.to_string();
        y.push_str(&record("web", 0, "", "  dnsPrefix: www"));
        y.push_str(&record(
            "fo",
            1,
            "    meridian.io/policy: failover\n    meridian.io/failover-order: houston,new-york",
            "",
        ));
        y.push_str(&record(
            "wt",
            2,
            "    meridian.io/policy: weighted\n    meridian.io/weights: new-york=1,houston=0,los-angeles=3",
            "",
        ));
        y.push_str(&record("every", 3, "    meridian.io/policy: all", ""));
        y.push_str(&record(
            "near",
            4,
            "    meridian.io/all-down: nearest",
            "",
        ));
        y.push_str(&record("none", 5, "    meridian.io/all-down: empty", ""));
        y.push_str(&record("fail", 6, "    meridian.io/all-down: servfail", ""));
        std::fs::write(dir.path().join("gslb.example.com.zone"), ZONE).expect("write zone");
        std::fs::write(dir.path().join("objects.yaml"), y).expect("write yaml");
        let geoip = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("zones/demo-geoip.mmdb");
        let loaded = crate::app::load(&crate::app::SourceArgs {
            zones: dir.path().to_path_buf(),
            geoip: Some(geoip),
        })
        .unwrap_or_else(|e| panic!("load: {e:?}"));
        Snapshot::new(Arc::new(loaded.compiled), loaded.geo)
    })
}

/// Health with the endpoints at `down` failing their probes and the clusters `drained`.
fn health(snap: &Snapshot, down: &[&str], drained: &[&str]) -> HealthView {
    let c = &snap.compiled;
    let mut h = HealthView::all_up(c);
    for (i, e) in c.endpoints.iter().enumerate() {
        if down
            .iter()
            .any(|d| d.parse::<IpAddr>().ok() == Some(e.addr))
        {
            h.endpoint_up[i] = false;
        }
    }
    let mut scoped = Vec::new();
    for entry in drained {
        // "cluster [namespace/name]": a drain scoped to one record.
        let (name, record) = match entry.split_once(" [") {
            Some((n, r)) => (n, Some(r.trim_end_matches(']'))),
            None => (*entry, None),
        };
        let i = c
            .clusters
            .iter()
            .position(|cl| cl.name == name)
            .unwrap_or_else(|| panic!("no cluster {name}"));
        match record {
            None => h.cluster_drained[i] = true,
            Some(r) => {
                for (n, dn) in c.catalog.dyn_names.iter().enumerate() {
                    if dn.object.ends_with(&format!(" {r}")) {
                        scoped.push((n as u32, i as u32));
                    }
                }
            }
        }
    }
    scoped.sort_unstable();
    h.scoped_drains = Arc::new(scoped);
    h
}

struct Case {
    qname: &'static str,
    qtype: RecordType,
    /// EDNS client subnet "address/prefix"; None: no ECS (the source, 127.0.0.1, is not in
    /// the GeoIP database, and no defaultCluster is configured).
    ecs: Option<&'static str>,
    /// Addresses whose probes fail.
    down: &'static [&'static str],
    drained: &'static [&'static str],
    /// The random number the weighted policy draws from.
    rand: u32,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    ns: &'static [&'static str],
    extra: &'static [&'static str],
    /// ECS scope prefix of the answer (checked when the query sent ECS).
    scope: u8,
}

const BASE: Case = Case {
    qname: "",
    qtype: RecordType::A,
    ecs: None,
    down: &[],
    drained: &[],
    rand: 0,
    rcode: ResponseCode::NoError,
    answer: &[],
    ns: &[],
    extra: &[],
    scope: 0,
};

const SOA: &str = "gslb.example.com. 60 IN SOA ns1.gslb.example.com. hostmaster.example.com. 7 7200 3600 1209600 60";

/// San Francisco in the demo GeoIP database (Los Angeles is nearest; scope /25).
const SF: Option<&str> = Some("192.0.2.0/24");
/// New York (scope /24).
const NYC: Option<&str> = Some("198.51.100.0/24");
/// Dallas (Houston is nearest; scope /25).
const DALLAS: Option<&str> = Some("203.0.113.0/25");

fn cases() -> Vec<Case> {
    vec![
        // --- static data from the zone file
        Case {
            qname: "static.gslb.example.com.",
            answer: &["static.gslb.example.com. 300 IN A 192.0.2.10"],
            ..BASE
        },
        Case {
            qname: "static.gslb.example.com.",
            qtype: RecordType::AAAA,
            answer: &["static.gslb.example.com. 300 IN AAAA 2001:db8::10"],
            ..BASE
        },
        Case {
            qname: "gslb.example.com.",
            qtype: RecordType::MX,
            answer: &["gslb.example.com. 300 IN MX 10 mail.example.com."],
            ..BASE
        },
        Case {
            qname: "gslb.example.com.",
            qtype: RecordType::NS,
            // Only referrals carry glue.
            answer: &["gslb.example.com. 300 IN NS ns1.gslb.example.com."],
            ..BASE
        },
        // A CNAME chain inside the zone, followed to the address.
        Case {
            qname: "chain.gslb.example.com.",
            answer: &[
                "chain.gslb.example.com. 300 IN CNAME alias.gslb.example.com.",
                "alias.gslb.example.com. 300 IN CNAME static.gslb.example.com.",
                "static.gslb.example.com. 300 IN A 192.0.2.10",
            ],
            ..BASE
        },
        // A CNAME out of the zone: the CNAME alone, the resolver goes on.
        Case {
            qname: "away.gslb.example.com.",
            answer: &["away.gslb.example.com. 300 IN CNAME elsewhere.example.net."],
            ..BASE
        },
        // Asked for the CNAME itself: not followed.
        Case {
            qname: "alias.gslb.example.com.",
            qtype: RecordType::CNAME,
            answer: &["alias.gslb.example.com. 300 IN CNAME static.gslb.example.com."],
            ..BASE
        },
        // --- negative answers
        Case {
            qname: "nope.gslb.example.com.",
            rcode: ResponseCode::NXDomain,
            ns: &[SOA],
            ..BASE
        },
        // NODATA: the name exists, not the type.
        Case {
            qname: "static.gslb.example.com.",
            qtype: RecordType::TXT,
            ns: &[SOA],
            ..BASE
        },
        // An empty non-terminal (ns1.lab's parent is lab, which exists; svc has children).
        Case {
            qname: "svc.gslb.example.com.",
            ns: &[SOA],
            ..BASE
        },
        // Outside every served zone.
        Case {
            qname: "example.org.",
            rcode: ResponseCode::Refused,
            ..BASE
        },
        // --- wildcard
        Case {
            qname: "shop.apps.gslb.example.com.",
            answer: &["shop.apps.gslb.example.com. 300 IN A 192.0.2.20"],
            ..BASE
        },
        Case {
            qname: "shop.apps.gslb.example.com.",
            qtype: RecordType::AAAA,
            ns: &[SOA],
            ..BASE
        },
        // --- delegation: a referral, not authoritative, glue in additional
        Case {
            qname: "host.lab.gslb.example.com.",
            ns: &["lab.gslb.example.com. 300 IN NS ns1.lab.gslb.example.com."],
            extra: &["ns1.lab.gslb.example.com. 300 IN A 192.0.2.54"],
            ..BASE
        },
        // --- geo: the nearest healthy cluster to the client subnet
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            answer: &["web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.30"],
            scope: 25,
            ..BASE
        },
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: NYC,
            answer: &["web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.10"],
            scope: 24,
            ..BASE
        },
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: DALLAS,
            answer: &["web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.20"],
            scope: 25,
            ..BASE
        },
        // An unplaceable client and no defaultCluster: every healthy cluster.
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            answer: &[
                "web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.10",
                "web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.20",
                "web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.30",
            ],
            ..BASE
        },
        // Los Angeles down: San Francisco fails over to Houston, the next nearest, with the
        // degraded TTL (one probe interval).
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.30"],
            answer: &["web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20"],
            scope: 25,
            ..BASE
        },
        // Los Angeles drained: the same.
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            drained: &["los-angeles"],
            answer: &["web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20"],
            scope: 25,
            ..BASE
        },
        // Los Angeles drained for this record only: the same.
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            drained: &["los-angeles [shop/web]"],
            answer: &["web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20"],
            scope: 25,
            ..BASE
        },
        // ... and its region name, which has only Los Angeles: the CNAME to the global name.
        Case {
            qname: "web.shop.demo.svc.us-west.gslb.example.com.",
            ecs: SF,
            drained: &["los-angeles [shop/web]"],
            answer: &[
                "web.shop.demo.svc.us-west.gslb.example.com. 5 IN CNAME web.shop.demo.svc.gslb.example.com.",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20",
            ],
            scope: 25,
            ..BASE
        },
        // Los Angeles drained for another record: this one still answers with it.
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            drained: &["los-angeles [shop/every]"],
            answer: &["web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.30"],
            scope: 25,
            ..BASE
        },
        // No IPv6 address anywhere: NODATA (still located: the answer is the geo name's).
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            qtype: RecordType::AAAA,
            ecs: SF,
            ns: &[SOA],
            scope: 25,
            ..BASE
        },
        // dnsPrefix and a zone-file CNAME in front of the geo name.
        Case {
            qname: "docs.gslb.example.com.",
            ecs: NYC,
            answer: &[
                "docs.gslb.example.com. 300 IN CNAME www.gslb.example.com.",
                "www.gslb.example.com. 60 IN CNAME web.shop.demo.svc.gslb.example.com.",
                "web.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.10",
            ],
            scope: 24,
            ..BASE
        },
        // --- region and zone names: their own cluster, else a CNAME to the wider name
        Case {
            qname: "web.shop.demo.svc.us-west.gslb.example.com.",
            ecs: NYC,
            answer: &["web.shop.demo.svc.us-west.gslb.example.com. 30 IN A 203.0.113.30"],
            scope: 24,
            ..BASE
        },
        Case {
            qname: "web.shop.demo.svc.us-west.gslb.example.com.",
            ecs: NYC,
            down: &["203.0.113.30"],
            answer: &[
                "web.shop.demo.svc.us-west.gslb.example.com. 5 IN CNAME web.shop.demo.svc.gslb.example.com.",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.10",
            ],
            scope: 24,
            ..BASE
        },
        Case {
            qname: "web.shop.demo.svc.lax1.us-west.gslb.example.com.",
            ecs: SF,
            drained: &["los-angeles"],
            answer: &[
                "web.shop.demo.svc.lax1.us-west.gslb.example.com. 5 IN CNAME web.shop.demo.svc.us-west.gslb.example.com.",
                "web.shop.demo.svc.us-west.gslb.example.com. 5 IN CNAME web.shop.demo.svc.gslb.example.com.",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20",
            ],
            scope: 25,
            ..BASE
        },
        // No address of the family at the zone name: CNAME up the chain, NODATA at the end.
        Case {
            qname: "web.shop.demo.svc.lax1.us-west.gslb.example.com.",
            qtype: RecordType::AAAA,
            answer: &[
                "web.shop.demo.svc.lax1.us-west.gslb.example.com. 30 IN CNAME web.shop.demo.svc.us-west.gslb.example.com.",
                "web.shop.demo.svc.us-west.gslb.example.com. 30 IN CNAME web.shop.demo.svc.gslb.example.com.",
            ],
            ns: &[SOA],
            ..BASE
        },
        // --- failover: the first healthy cluster in the order (houston, new-york, then LA)
        Case {
            qname: "fo.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            answer: &["fo.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.21"],
            ..BASE
        },
        Case {
            qname: "fo.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.21"],
            answer: &["fo.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.11"],
            ..BASE
        },
        Case {
            qname: "fo.shop.demo.svc.gslb.example.com.",
            down: &["203.0.113.21"],
            drained: &["new-york"],
            answer: &["fo.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.31"],
            ..BASE
        },
        // --- weighted (1, 0, 3): draws 0 → New York; 1..=3 → Los Angeles; Houston never
        Case {
            qname: "wt.shop.demo.svc.gslb.example.com.",
            rand: 0,
            answer: &["wt.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.12"],
            ..BASE
        },
        Case {
            qname: "wt.shop.demo.svc.gslb.example.com.",
            rand: 1,
            answer: &["wt.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.32"],
            ..BASE
        },
        Case {
            qname: "wt.shop.demo.svc.gslb.example.com.",
            rand: 7,
            answer: &["wt.shop.demo.svc.gslb.example.com. 30 IN A 203.0.113.32"],
            ..BASE
        },
        // Los Angeles down: every draw goes to New York.
        Case {
            qname: "wt.shop.demo.svc.gslb.example.com.",
            rand: 7,
            down: &["203.0.113.32"],
            answer: &["wt.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.12"],
            ..BASE
        },
        // Only the weight-0 cluster is healthy: it answers (failover order).
        Case {
            qname: "wt.shop.demo.svc.gslb.example.com.",
            rand: 7,
            down: &["203.0.113.12", "203.0.113.32"],
            answer: &["wt.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.22"],
            ..BASE
        },
        // --- all: every healthy cluster, wherever the client is
        Case {
            qname: "every.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.23"],
            answer: &[
                "every.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.13",
                "every.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.33",
            ],
            ..BASE
        },
        // --- all-down policies (every cluster down)
        // all (the default): every address.
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.10", "203.0.113.20", "203.0.113.30"],
            answer: &[
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.10",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.30",
            ],
            scope: 25,
            ..BASE
        },
        // all, with one cluster drained and the rest down: the drained one stays out.
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.10", "203.0.113.20"],
            drained: &["los-angeles"],
            answer: &[
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.10",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20",
            ],
            scope: 25,
            ..BASE
        },
        // all, every cluster drained: drains give way.
        Case {
            qname: "web.shop.demo.svc.gslb.example.com.",
            drained: &["new-york", "houston", "los-angeles"],
            answer: &[
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.10",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.20",
                "web.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.30",
            ],
            ..BASE
        },
        // nearest: the client's nearest cluster, health ignored.
        Case {
            qname: "near.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.14", "203.0.113.24", "203.0.113.34"],
            answer: &["near.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.34"],
            scope: 25,
            ..BASE
        },
        // nearest, the nearest cluster drained: the next nearest.
        Case {
            qname: "near.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.14", "203.0.113.24"],
            drained: &["los-angeles"],
            answer: &["near.shop.demo.svc.gslb.example.com. 5 IN A 203.0.113.24"],
            scope: 25,
            ..BASE
        },
        // empty: NOERROR, no address.
        Case {
            qname: "none.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.15", "203.0.113.25", "203.0.113.35"],
            ns: &[SOA],
            scope: 25,
            ..BASE
        },
        // servfail.
        Case {
            qname: "fail.shop.demo.svc.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.16", "203.0.113.26", "203.0.113.36"],
            rcode: ResponseCode::ServFail,
            scope: 25,
            ..BASE
        },
        // Region name, its cluster down and every other too: the CNAME, then the global
        // name's all-down answer (the CNAME stays in the SERVFAIL).
        Case {
            qname: "fail.shop.demo.svc.us-east.gslb.example.com.",
            ecs: SF,
            down: &["203.0.113.16", "203.0.113.26", "203.0.113.36"],
            rcode: ResponseCode::ServFail,
            answer: &[
                "fail.shop.demo.svc.us-east.gslb.example.com. 5 IN CNAME fail.shop.demo.svc.gslb.example.com.",
            ],
            scope: 25,
            ..BASE
        },
    ]
}

fn packet(c: &Case) -> Vec<u8> {
    let mut m = Message::new(0x4d45, MessageType::Query, OpCode::Query);
    m.add_query(HQuery::query(
        Name::from_ascii(c.qname).expect("name"),
        c.qtype,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(ecs) = c.ecs {
        let (addr, prefix) = ecs.split_once('/').expect("address/prefix");
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            addr.parse().expect("address"),
            prefix.parse().expect("prefix"),
            0,
        )));
    }
    m.set_edns(e);
    m.to_vec().expect("encode")
}

fn lines(rrs: &[hickory_proto::rr::Record]) -> Vec<String> {
    rrs.iter().map(|r| r.to_string()).collect()
}

#[test]
fn lookup_table() {
    let base = fixture();
    let mut failures = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let snap = Snapshot {
            generation: base.generation,
            published: base.published,
            compiled: base.compiled.clone(),
            health: Arc::new(health(base, c.down, c.drained)),
            geo: base.geo.clone(),
        };
        let mut out = Vec::new();
        let src: IpAddr = "127.0.0.1".parse().expect("ip");
        respond(&snap, &packet(c), src, Transport::Udp, c.rand, &mut out).expect("answered");
        let m = Message::from_vec(&out).expect("decodable");
        let label = format!(
            "case {i}: {} {} ecs {:?} down {:?} drained {:?} rand {}",
            c.qname, c.qtype, c.ecs, c.down, c.drained, c.rand
        );
        let referral = !c.ns.is_empty() && c.ns.iter().all(|l| l.contains(" IN NS "));
        let got = (
            m.metadata.response_code,
            lines(&m.answers),
            lines(&m.authorities),
            lines(&m.additionals),
            m.metadata.authoritative,
        );
        let want = (
            c.rcode,
            c.answer.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            c.ns.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            c.extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            // Authoritative except for referrals, REFUSED and SERVFAIL.
            !referral && c.rcode != ResponseCode::Refused && c.rcode != ResponseCode::ServFail,
        );
        if got != want {
            failures.push(format!("{label}\n  got  {got:#?}\n  want {want:#?}"));
            continue;
        }
        if c.ecs.is_some() {
            let scope = match m
                .edns
                .as_ref()
                .and_then(|e| e.options().get(EdnsCode::Subnet))
            {
                Some(EdnsOption::Subnet(s)) => s.scope_prefix(),
                other => panic!("{label}: no ECS in the answer: {other:?}"),
            };
            if scope != c.scope {
                failures.push(format!("{label}\n  ECS scope {scope}, want {}", c.scope));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `explain` prints routing's decision and its reason, for the same fixture.
#[test]
fn explain_shows_the_reason() {
    let base = fixture();
    let sf: IpAddr = "192.0.2.1".parse().expect("ip");
    let cases: [(&str, &[&str], &[&str], &str); 6] = [
        ("web", &[], &[], "los-angeles (geo policy)"),
        (
            "web",
            &["203.0.113.30"],
            &[],
            "houston (geo policy); nearest cluster los-angeles is down",
        ),
        (
            "web",
            &[],
            &["los-angeles"],
            "houston (geo policy); nearest cluster los-angeles is drained",
        ),
        ("fo", &[], &[], "houston (failover policy)"),
        (
            "near",
            &["203.0.113.14", "203.0.113.24", "203.0.113.34"],
            &[],
            "los-angeles although down: every cluster is down, all-down policy \"nearest\"",
        ),
        (
            "near",
            &["203.0.113.14", "203.0.113.24"],
            &["los-angeles"],
            "houston although down: every cluster is down, all-down policy \"nearest\"; \
             nearest cluster los-angeles is drained",
        ),
    ];
    for (name, down, drained, want) in cases {
        let snap = Snapshot {
            generation: base.generation,
            published: base.published,
            compiled: base.compiled.clone(),
            health: Arc::new(health(base, down, drained)),
            geo: base.geo.clone(),
        };
        let qname = format!("{name}.shop.demo.svc.gslb.example.com.");
        let e = crate::explain::explain(&snap, &qname, "A", sf).expect("explained");
        assert_eq!(
            e.decision, want,
            "{qname} down {down:?} drained {drained:?}"
        );
    }
}
