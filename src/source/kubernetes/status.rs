//! What meridian writes back, as pure functions: a record's `status` (KubeFed's
//! ServiceDNSRecord / IngressDNSRecord controllers, removed upstream after v0.6.1) and the
//! `DNSEndpoint` derived from it (KubeFed's DNSEndpoint controller, names `service-<name>` /
//! `ingress-<name>`). No I/O: the caller gathers what the member clusters say.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::catalog::kubefed::{Level, ServiceNames, prefix_name, record_ttl};
use crate::model::{
    ClusterDNS, ClusterIngressDNS, Endpoint, IngressDNSRecord, IngressDNSRecordStatus,
    LoadBalancerIngress, LoadBalancerStatus, ServiceDNSRecord, ServiceDNSRecordStatus,
};

/// A member cluster as the status needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterInfo {
    pub name: String,
    pub region: Option<String>,
    pub zones: Vec<String>,
    /// Its API server answers. An offline cluster keeps its entry with an empty loadBalancer in
    /// the written status, while its last known addresses are served as down targets.
    pub online: bool,
}

/// What one member says about the Service (or Ingress) behind a record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    pub load_balancer: LoadBalancerStatus,
    /// Some EndpointSlice of the Service has a ready endpoint (always true for Ingresses).
    pub ready: bool,
}

/// One cluster's entry before it is split into what is written and what is served.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub cluster: String,
    pub region: Option<String>,
    pub zones: Vec<String>,
    pub load_balancer: LoadBalancerStatus,
    /// Has ready endpoints (or the record allows a Service without endpoints).
    pub ready: bool,
}

/// Load-balancer entries sorted and deduplicated, so equal states compare equal and the
/// written status does not flap with the order a member lists them in.
pub fn normalize_lb(lb: &LoadBalancerStatus) -> LoadBalancerStatus {
    let mut ingress: Vec<LoadBalancerIngress> = lb
        .ingress
        .iter()
        .filter(|i| {
            i.ip.as_deref().is_some_and(|s| !s.is_empty())
                || i.hostname.as_deref().is_some_and(|s| !s.is_empty())
        })
        .cloned()
        .collect();
    ingress.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
    ingress.dedup();
    LoadBalancerStatus { ingress }
}

/// Entries for every registered cluster, sorted by cluster name (KubeFed keeps every cluster,
/// the ones without the Service or offline with an empty loadBalancer). An offline cluster is
/// still observed — its stores keep the last list it gave — and its entry is not ready, so it
/// goes through the same all-down logic as a cluster without ready endpoints.
pub fn service_entries(
    record: &ServiceDNSRecord,
    clusters: &[ClusterInfo],
    observe: impl Fn(&ClusterInfo) -> Option<Observation>,
) -> Vec<Entry> {
    let allow_without_endpoints = record.spec.allow_service_without_endpoints == Some(true);
    let mut out: Vec<Entry> = clusters
        .iter()
        .map(|c| {
            let (load_balancer, ready) = match observe(c) {
                Some(o) => (
                    normalize_lb(&o.load_balancer),
                    c.online && (o.ready || allow_without_endpoints),
                ),
                None => (LoadBalancerStatus::default(), false),
            };
            Entry {
                cluster: c.name.clone(),
                region: c.region.clone(),
                zones: c.zones.clone(),
                load_balancer,
                ready,
            }
        })
        .collect();
    out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    out
}

/// The status meridian writes: KubeFed's, where a cluster without ready endpoints has an empty
/// loadBalancer.
pub fn written_service_status(domain: Option<&str>, entries: &[Entry]) -> ServiceDNSRecordStatus {
    ServiceDNSRecordStatus {
        domain: domain.map(str::to_string),
        dns: entries
            .iter()
            .map(|e| ClusterDNS {
                cluster: e.cluster.clone(),
                region: e.region.clone(),
                zones: e.zones.clone(),
                load_balancer: if e.ready {
                    e.load_balancer.clone()
                } else {
                    LoadBalancerStatus::default()
                },
            })
            .collect(),
    }
}

/// The status meridian serves: every address, with the unready (record, cluster) pairs listed
/// separately so those targets are marked down rather than forgotten (the all-down policy can
/// still answer with them).
pub fn served_service_status(
    domain: Option<&str>,
    entries: &[Entry],
) -> (ServiceDNSRecordStatus, Vec<String>) {
    let status = ServiceDNSRecordStatus {
        domain: domain.map(str::to_string),
        dns: entries
            .iter()
            .map(|e| ClusterDNS {
                cluster: e.cluster.clone(),
                region: e.region.clone(),
                zones: e.zones.clone(),
                load_balancer: e.load_balancer.clone(),
            })
            .collect(),
    };
    let unready = entries
        .iter()
        .filter(|e| !e.ready && !e.load_balancer.ingress.is_empty())
        .map(|e| e.cluster.clone())
        .collect();
    (status, unready)
}

/// IngressDNSRecord status: every registered cluster, sorted, its Ingress' addresses (empty when
/// the Ingress is missing). Returns the written status (an offline cluster empty, as KubeFed
/// wrote it), the served one (an offline cluster's last known addresses kept) and the clusters
/// served as down (offline, with addresses).
pub fn ingress_statuses(
    clusters: &[ClusterInfo],
    observe: impl Fn(&ClusterInfo) -> Option<Observation>,
) -> (IngressDNSRecordStatus, IngressDNSRecordStatus, Vec<String>) {
    let mut seen: Vec<(ClusterIngressDNS, bool)> = clusters
        .iter()
        .map(|c| {
            let lb = observe(c)
                .map(|o| normalize_lb(&o.load_balancer))
                .unwrap_or_default();
            (
                ClusterIngressDNS {
                    cluster: c.name.clone(),
                    load_balancer: lb,
                },
                c.online,
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cluster.cmp(&b.0.cluster));
    let written = IngressDNSRecordStatus {
        dns: seen
            .iter()
            .map(|(e, online)| ClusterIngressDNS {
                cluster: e.cluster.clone(),
                load_balancer: if *online {
                    e.load_balancer.clone()
                } else {
                    LoadBalancerStatus::default()
                },
            })
            .collect(),
    };
    let down = seen
        .iter()
        .filter(|(e, online)| !online && !e.load_balancer.ingress.is_empty())
        .map(|(e, _)| e.cluster.clone())
        .collect();
    let served = IngressDNSRecordStatus {
        dns: seen.into_iter().map(|(e, _)| e).collect(),
    };
    (written, served, down)
}

/// Type of the condition saying whether meridian accepts a record.
pub const VALID: &str = "Valid";

/// A record's `status.conditions` with its [`VALID`] condition set from `error` (None: valid),
/// other conditions kept as they are. `now` is used as `lastTransitionTime` only when the
/// condition's status changes, so an unchanged condition compares equal to the one written.
pub fn with_valid_condition(
    existing: &serde_json::Value,
    error: Option<&str>,
    generation: Option<i64>,
    now: &str,
) -> serde_json::Value {
    let status = if error.is_some() { "False" } else { "True" };
    let (reason, message) = match error {
        Some(e) => ("InvalidAnnotation", e.to_string()),
        None => ("Accepted", "the record is valid and served".to_string()),
    };
    let list: Vec<serde_json::Value> = existing.as_array().cloned().unwrap_or_default();
    let prev = list.iter().find(|c| c["type"] == VALID);
    let since = prev
        .filter(|c| c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now)
        .to_string();
    let mut cond = serde_json::json!({
        "type": VALID,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    });
    if let Some(g) = generation {
        cond["observedGeneration"] = g.into();
    }
    let mut out: Vec<serde_json::Value> = Vec::with_capacity(list.len() + 1);
    let mut placed = false;
    for c in list {
        if c["type"] == VALID {
            if !placed {
                out.push(cond.clone());
                placed = true;
            }
        } else {
            out.push(c);
        }
    }
    if !placed {
        out.push(cond);
    }
    serde_json::Value::Array(out)
}

/// A level's targets as endpoints: A and AAAA for addresses; a CNAME to the first hostname when
/// there is no address (a name holds a CNAME or addresses, never both).
fn level(dns_name: &str, lbs: &[&LoadBalancerStatus], ttl: u32) -> Vec<Endpoint> {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for lb in lbs {
        for i in &lb.ingress {
            if let Some(ip) =
                i.ip.as_deref()
                    .and_then(|s| s.trim().parse::<IpAddr>().ok())
            {
                match ip {
                    IpAddr::V4(_) => v4.insert(ip),
                    IpAddr::V6(_) => v6.insert(ip),
                };
            } else if let Some(h) = i.hostname.as_deref().filter(|h| !h.is_empty()) {
                hosts.insert(h.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    let ep = |record_type: &str, targets: Vec<String>| Endpoint {
        dns_name: dns_name.to_string(),
        targets,
        record_type: record_type.to_string(),
        record_ttl: Some(ttl),
        ..Default::default()
    };
    let mut out = Vec::new();
    if !v4.is_empty() {
        out.push(ep("A", v4.iter().map(|a| a.to_string()).collect()));
    }
    if !v6.is_empty() {
        out.push(ep("AAAA", v6.iter().map(|a| a.to_string()).collect()));
    }
    if out.is_empty()
        && let Some(h) = hosts.into_iter().next()
    {
        out.push(ep("CNAME", vec![h]));
    }
    out
}

fn cname(dns_name: &str, target: &str, ttl: u32) -> Endpoint {
    Endpoint {
        dns_name: dns_name.to_string(),
        targets: vec![target.to_string()],
        record_type: "CNAME".to_string(),
        record_ttl: Some(ttl),
        ..Default::default()
    }
}

/// The endpoints of `service-<name>`, from the written status: global, region and zone names
/// (a level without targets is a CNAME to the wider one, as KubeFed wrote it) and the
/// `dnsPrefix` CNAME.
pub fn service_endpoints(
    record: &ServiceDNSRecord,
    domain: &str,
    status: &ServiceDNSRecordStatus,
) -> Vec<Endpoint> {
    let ttl = record_ttl(record.spec.record_ttl);
    let names = ServiceNames::of(record);
    let global = names.text(Level::Global, domain);
    let mut out = level(
        &global,
        &status
            .dns
            .iter()
            .map(|e| &e.load_balancer)
            .collect::<Vec<_>>(),
        ttl,
    );
    let regions: BTreeSet<&str> = status
        .dns
        .iter()
        .filter_map(|e| e.region.as_deref())
        .collect();
    for r in &regions {
        let name = names.text(Level::Region(r), domain);
        let lbs: Vec<&LoadBalancerStatus> = status
            .dns
            .iter()
            .filter(|e| e.region.as_deref() == Some(*r))
            .map(|e| &e.load_balancer)
            .collect();
        let eps = level(&name, &lbs, ttl);
        if eps.is_empty() {
            out.push(cname(&name, &global, ttl));
        } else {
            out.extend(eps);
        }
    }
    let zones: BTreeSet<(&str, &str)> = status
        .dns
        .iter()
        .filter_map(|e| e.region.as_deref().map(|r| (r, &e.zones)))
        .flat_map(|(r, zs)| zs.iter().map(move |z| (r, z.as_str())))
        .collect();
    for (r, z) in &zones {
        let name = names.text(Level::Zone { region: r, zone: z }, domain);
        let lbs: Vec<&LoadBalancerStatus> = status
            .dns
            .iter()
            .filter(|e| e.region.as_deref() == Some(*r) && e.zones.iter().any(|x| x == z))
            .map(|e| &e.load_balancer)
            .collect();
        let eps = level(&name, &lbs, ttl);
        if eps.is_empty() {
            out.push(cname(&name, &names.text(Level::Region(r), domain), ttl));
        } else {
            out.extend(eps);
        }
    }
    if let Some(p) = record.spec.dns_prefix.as_deref().filter(|p| !p.is_empty()) {
        let domain = domain.trim_end_matches('.');
        out.push(cname(&prefix_name(p, domain), &global, ttl));
    }
    out
}

/// The endpoints of `ingress-<name>`: each host over every cluster's ingress addresses.
pub fn ingress_endpoints(
    record: &IngressDNSRecord,
    status: &IngressDNSRecordStatus,
) -> Vec<Endpoint> {
    let ttl = record_ttl(record.spec.record_ttl);
    let lbs: Vec<&LoadBalancerStatus> = status.dns.iter().map(|e| &e.load_balancer).collect();
    record
        .spec
        .hosts
        .iter()
        .flat_map(|h| level(h.trim_end_matches('.'), &lbs, ttl))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceDNSRecordSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lb(addrs: &[&str]) -> LoadBalancerStatus {
        LoadBalancerStatus {
            ingress: addrs
                .iter()
                .map(|a| {
                    if a.parse::<IpAddr>().is_ok() {
                        LoadBalancerIngress {
                            ip: Some(a.to_string()),
                            hostname: None,
                        }
                    } else {
                        LoadBalancerIngress {
                            ip: None,
                            hostname: Some(a.to_string()),
                        }
                    }
                })
                .collect(),
        }
    }

    fn cluster(name: &str, region: &str, zone: &str, online: bool) -> ClusterInfo {
        ClusterInfo {
            name: name.into(),
            region: Some(region.into()),
            zones: vec![zone.into()],
            online,
        }
    }

    fn record() -> ServiceDNSRecord {
        ServiceDNSRecord {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: ServiceDNSRecordSpec {
                domain_ref: "fed".into(),
                dns_prefix: Some("www".into()),
                record_ttl: Some(60),
                ..Default::default()
            },
            status: None,
        }
    }

    #[test]
    fn entries_sorted_offline_and_unready_written_empty_served_down() {
        let clusters = vec![
            cluster("west", "us-west1", "us-west1-a", true),
            cluster("east", "us-east1", "us-east1-b", true),
            cluster("gone", "eu-west1", "eu-west1-a", false),
            cluster("idle", "us-east1", "us-east1-c", true),
        ];
        let entries = service_entries(&record(), &clusters, |c| match c.name.as_str() {
            "west" => Some(Observation {
                load_balancer: lb(&["2001:db8::1", "192.0.2.2", "192.0.2.2"]),
                ready: true,
            }),
            "east" => Some(Observation {
                load_balancer: lb(&["192.0.2.1"]),
                ready: false,
            }),
            // An offline cluster's stores keep its last list.
            "gone" => Some(Observation {
                load_balancer: lb(&["192.0.2.9"]),
                ready: true,
            }),
            _ => None,
        });
        let names: Vec<&str> = entries.iter().map(|e| e.cluster.as_str()).collect();
        assert_eq!(names, ["east", "gone", "idle", "west"]);
        let written = written_service_status(Some("gslb.example.com"), &entries);
        assert!(
            written.dns[0].load_balancer.ingress.is_empty(),
            "east has no ready endpoints"
        );
        assert!(written.dns[1].load_balancer.ingress.is_empty());
        assert_eq!(
            written.dns[3].load_balancer.ingress.len(),
            2,
            "deduplicated, v6 kept"
        );
        let (served, unready) = served_service_status(Some("gslb.example.com"), &entries);
        assert_eq!(served.dns[0].load_balancer, lb(&["192.0.2.1"]));
        assert_eq!(served.dns[1].load_balancer, lb(&["192.0.2.9"]));
        assert_eq!(unready, vec!["east".to_string(), "gone".to_string()]);
    }

    #[test]
    fn valid_condition_keeps_time_until_it_flips() {
        let other = serde_json::json!({"type": "Other", "status": "True"});
        let c = with_valid_condition(
            &serde_json::json!([other.clone()]),
            Some("metadata.annotations[\"meridian.io/policy\"]: bad"),
            Some(3),
            "T1",
        );
        assert_eq!(c[0], other);
        assert_eq!(c[1]["status"], "False");
        assert_eq!(c[1]["reason"], "InvalidAnnotation");
        assert_eq!(c[1]["observedGeneration"], 3);
        assert!(
            c[1]["message"]
                .as_str()
                .unwrap_or("")
                .contains("meridian.io/policy")
        );
        // Same state later: the same value, so nothing is written again.
        assert_eq!(
            with_valid_condition(
                &c,
                Some("metadata.annotations[\"meridian.io/policy\"]: bad"),
                Some(3),
                "T2"
            ),
            c
        );
        let fixed = with_valid_condition(&c, None, Some(4), "T3");
        assert_eq!(fixed[1]["status"], "True");
        assert_eq!(fixed[1]["lastTransitionTime"], "T3");
        assert_eq!(fixed.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn endpoints_follow_kubefed_scheme() {
        let status = ServiceDNSRecordStatus {
            domain: Some("gslb.example.com".into()),
            dns: vec![
                ClusterDNS {
                    cluster: "east".into(),
                    region: Some("us-east1".into()),
                    zones: vec!["us-east1-b".into()],
                    load_balancer: LoadBalancerStatus::default(),
                },
                ClusterDNS {
                    cluster: "west".into(),
                    region: Some("us-west1".into()),
                    zones: vec!["us-west1-a".into()],
                    load_balancer: lb(&["192.0.2.2", "2001:db8::2"]),
                },
                ClusterDNS {
                    cluster: "elb".into(),
                    region: Some("eu-west1".into()),
                    zones: vec![],
                    load_balancer: lb(&["abc.elb.example.net"]),
                },
            ],
        };
        let eps = service_endpoints(&record(), "gslb.example.com.", &status);
        let text: Vec<String> = eps
            .iter()
            .map(|e| format!("{} {} {}", e.dns_name, e.record_type, e.targets.join(",")))
            .collect();
        assert_eq!(
            text,
            [
                "web.shop.fed.svc.gslb.example.com A 192.0.2.2",
                "web.shop.fed.svc.gslb.example.com AAAA 2001:db8::2",
                "web.shop.fed.svc.eu-west1.gslb.example.com CNAME abc.elb.example.net",
                "web.shop.fed.svc.us-east1.gslb.example.com CNAME web.shop.fed.svc.gslb.example.com",
                "web.shop.fed.svc.us-west1.gslb.example.com A 192.0.2.2",
                "web.shop.fed.svc.us-west1.gslb.example.com AAAA 2001:db8::2",
                "web.shop.fed.svc.us-east1-b.us-east1.gslb.example.com CNAME web.shop.fed.svc.us-east1.gslb.example.com",
                "web.shop.fed.svc.us-west1-a.us-west1.gslb.example.com A 192.0.2.2",
                "web.shop.fed.svc.us-west1-a.us-west1.gslb.example.com AAAA 2001:db8::2",
                "www.gslb.example.com CNAME web.shop.fed.svc.gslb.example.com",
            ]
        );
        assert!(eps.iter().all(|e| e.record_ttl == Some(60)));
        assert_eq!(
            crate::catalog::kubefed::endpoint_name(
                crate::catalog::kubefed::SERVICE_ENDPOINT_PREFIX,
                "web"
            ),
            "service-web"
        );
    }
}
