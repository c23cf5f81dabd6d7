//! The catalog: every source's objects and zone files merged into one validated, logical view —
//! zones, static records, member clusters and the health-dependent ("dynamic") names that
//! federated records imply under KubeFed's name scheme. Pure: no I/O, no clock.
//!
//! An object that does not validate is reported (file/object and field) and left out; the rest
//! of the catalog is still built, so one bad object never takes down the others.
//!
//! By concern: `names` (the wire-name codec and zone lookup, shared with the snapshot),
//! `options` (`meridian.io/*` annotations), `kubefed` (KubeFed's name scheme, shared with the
//! Kubernetes status writer, and the names its records imply), `zones` (zone files and
//! Domains), `statics` (DNSEndpoints and the checks over every static record). This file holds
//! the types, clusters and the build order.

pub mod kubefed;
pub mod names;
pub mod options;
pub mod patch;
pub mod shared;
pub mod statics;
pub mod zones;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::{Name, Record, RecordType};
use serde::Serialize;
use smallvec::SmallVec;

use crate::config::Settings;
use crate::geo::{GeoPoint, tables};
use crate::model::{self, Object};
use crate::source::file::ZoneFile;
use crate::source::{Located, SourceError};

pub use kubefed::{DEFAULT_RECORD_TTL, NameScope};
pub use names::{WireName, name_to_wire, wire_to_name};
pub use options::{
    CLUSTER_ANNOTATIONS, RECORD_ANNOTATIONS, RecordOptions, annotation_errors, checks_annotations,
    known_annotations, record_options,
};
pub use statics::DEFAULT_ENDPOINT_TTL;
pub use zones::Zone;

use names::{ZoneIndex, apex_wire, check_label, ser_name, ser_opt_name};
use options::{OptionsEntry, ann_field, annotation};
use shared::ChunkVec;
use zones::Domains;

#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    pub name: String,
    pub region: Option<String>,
    pub zones: Vec<String>,
    pub location: Option<GeoPoint>,
    /// Where the location came from: `annotation`, `region <name>`, or absent.
    pub location_source: Option<String>,
}

pub use crate::health::spec::{ProbeKind, ProbeSpec};

/// One cluster's addresses for a dynamic name.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// Index into `Catalog::clusters`.
    pub cluster: usize,
    /// Inline for one address, the usual load balancer.
    pub addrs: SmallVec<[IpAddr; 1]>,
    /// Load-balancer hostnames (ELB style): answered by CNAME when the cluster has no address.
    pub hostnames: Vec<String>,
    /// False when Kubernetes reports no ready endpoints for the record in this cluster: the
    /// target counts as down for this record only.
    pub ready: bool,
}

/// A name whose answer depends on client location and health.
#[derive(Clone, Debug, Serialize)]
pub struct DynName {
    #[serde(serialize_with = "ser_name")]
    pub name: WireName,
    /// Index into `Catalog::zones` of the zone holding the name (set when it is committed).
    #[serde(skip)]
    pub zone: u32,
    /// `Kind ns/name` of the object that implies this name.
    pub object: Arc<str>,
    pub scope: NameScope,
    pub ttl: u32,
    /// Shared by every name one object implies.
    pub options: Arc<RecordOptions>,
    /// Moved into the snapshot's tables by `snapshot::compile::compile`, which leaves this
    /// empty: the compiled targets are the ones to read (`Compiled::dyns`).
    pub targets: Vec<Target>,
    /// CNAME target when no target here is healthy (region → global, zone → region).
    #[serde(serialize_with = "ser_opt_name")]
    pub fallback: Option<WireName>,
}

impl DynName {
    pub fn display_name(&self) -> Name {
        wire_to_name(&self.name)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub zones: Vec<Zone>,
    pub records: Vec<Record>,
    pub dyn_names: ChunkVec<DynName>,
    pub clusters: Vec<Cluster>,
}

/// Everything the sources hand over.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub zone_files: Vec<ZoneFile>,
    pub objects: Vec<Located<Object>>,
    /// (`Kind ns/name` of a record, cluster) pairs without ready endpoints (Kubernetes
    /// readiness): those targets are served marked down.
    pub unready: HashSet<(String, String)>,
}

/// The catalog being built, with the indexes building it needs; kept after a build by a
/// [`Patcher`] to redo single records against it.
struct Builder {
    settings: Settings,
    unready: HashSet<(String, String)>,
    cat: Catalog,
    /// Domains by name, for records' `domainRef`.
    domains: Arc<Domains>,
    /// Clusters below this index are registered (KubeFedCluster objects); the rest were added
    /// for status entries naming unregistered clusters.
    registered: usize,
    /// Set when an object was refused over a name another object holds: which one keeps it
    /// depends on the order of every object, so records can no longer be redone one by one.
    conflicts: bool,
    cluster_index: HashMap<String, usize>,
    /// Wire names already used by dynamic names.
    dyn_index: HashMap<WireName, usize, foldhash::fast::RandomState>,
    /// The zones' apexes, for the zone of a name.
    zone_index: ZoneIndex,
    /// Records' options by their `meridian.io/*` annotations: most records share a few sets,
    /// and the names of one record share one.
    options_cache: HashMap<u64, Vec<OptionsEntry>>,
    /// The DNSEndpoint that defined each (name, type), to refuse a second definer.
    endpoint_owners: HashMap<(Name, RecordType), Arc<str>>,
    /// Where each static CNAME came from (zone file or object), for loop reports.
    cname_origins: HashMap<Name, Arc<str>>,
    errors: Vec<SourceError>,
}

/// Builds the catalog; returns it with every error found. Objects with errors are left out.
pub fn build(inputs: &Inputs, settings: &Settings) -> (Catalog, Vec<SourceError>) {
    build_from(
        &inputs.zone_files,
        &[&inputs.objects],
        &inputs.unready,
        settings,
    )
}

/// `build` over objects held in several lists (the sources' fragments, shared rather than
/// copied into one `Inputs`), in the order given.
pub fn build_from(
    zone_files: &[ZoneFile],
    object_lists: &[&[Located<Object>]],
    unready: &HashSet<(String, String)>,
    settings: &Settings,
) -> (Catalog, Vec<SourceError>) {
    let objects = || object_lists.iter().flat_map(|l| l.iter());
    let b = build_with(zone_files.iter(), objects, unready, settings);
    (b.cat, b.errors)
}

/// A built catalog kept with its indexes, to redo single records (a record's change, the
/// common case with Kubernetes) without building everything again. Built by [`build_patchable`].
pub struct Patcher {
    b: Builder,
}

/// As [`build_from`], keeping what a [`Patcher`] needs. `objects` gives every object, in order,
/// each time it is called.
pub fn build_patchable<'o, I>(
    zone_files: &[&ZoneFile],
    objects: impl Fn() -> I,
    unready: &HashSet<(String, String)>,
    settings: &Settings,
) -> (Catalog, Vec<SourceError>, Patcher)
where
    I: Iterator<Item = &'o Located<Object>>,
{
    let mut b = build_with(zone_files.iter().copied(), objects, unready, settings);
    let cat = std::mem::take(&mut b.cat);
    let errors = std::mem::take(&mut b.errors);
    (cat, errors, Patcher { b })
}

fn build_with<'o, 'z, I>(
    zone_files: impl Iterator<Item = &'z ZoneFile>,
    objects: impl Fn() -> I,
    unready: &HashSet<(String, String)>,
    settings: &Settings,
) -> Builder
where
    I: Iterator<Item = &'o Located<Object>>,
{
    let mut b = Builder {
        settings: settings.clone(),
        unready: unready.clone(),
        cat: Catalog::default(),
        domains: Arc::default(),
        registered: 0,
        conflicts: false,
        cluster_index: HashMap::new(),
        dyn_index: HashMap::default(),
        zone_index: ZoneIndex::default(),
        options_cache: HashMap::default(),
        endpoint_owners: HashMap::new(),
        cname_origins: HashMap::new(),
        errors: Vec::new(),
    };
    // Sized up front: growing by doubling would hold the old and new arrays (and rehash every
    // name) at each step, the largest transient of a big build.
    let names: usize = objects()
        .map(|o| match &o.value {
            // Global, and at most a region and a zone name per status entry.
            Object::ServiceDNSRecord(r) => 1 + 2 * r.status.as_ref().map_or(0, |s| s.dns.len()),
            Object::IngressDNSRecord(r) => r.spec.hosts.len(),
            _ => 0,
        })
        .sum();
    b.cat.dyn_names.reserve(names);
    b.dyn_index.reserve(names);
    for zf in zone_files {
        b.add_zone_file(zf);
    }
    let mut domains: Domains = HashMap::new();
    for o in objects() {
        if let Object::Domain(d) = &o.value
            && let Some(name) = b.add_domain(&o.location, d)
        {
            domains
                .entry(d.metadata.name.clone().unwrap_or_default())
                .or_default()
                .push((d.metadata.namespace.clone(), name.clone(), apex_wire(&name)));
        }
    }
    b.domains = Arc::new(domains);
    for o in objects() {
        if let Object::KubeFedCluster(c) = &o.value {
            b.add_cluster(&o.location, c);
        }
    }
    b.registered = b.cat.clusters.len();
    if let Some(dc) = &settings.default_cluster
        && !b.cluster_index.contains_key(dc)
    {
        b.errors.push(SourceError::new(
            "configuration",
            format!("spec.defaultCluster: no KubeFedCluster named {dc:?}"),
        ));
    }
    for o in objects() {
        match &o.value {
            Object::ServiceDNSRecord(r) => b.add_service_record(&o.location, r),
            Object::IngressDNSRecord(r) => b.add_ingress_record(&o.location, r),
            _ => {}
        }
    }
    // Static endpoints last: they must not collide with names that records imply.
    for o in objects() {
        if let Object::DNSEndpoint(e) = &o.value {
            b.add_endpoint(&o.location, e);
        }
    }
    b.check_static_conflicts();
    b.check_cname_loops();
    // Large catalogs grow these by doubling: give back the unused half.
    b.cat.dyn_names.shrink_to_fit();
    b
}

impl Builder {
    fn err(&mut self, location: &str, message: impl Into<String>) {
        self.errors.push(SourceError::new(location, message));
    }

    fn zone_of(&self, name: &Name) -> Option<usize> {
        self.zone_index.find_name(name).map(|z| z as usize)
    }

    /// The zone holding a wire name: the longest apex that contains it.
    fn zone_of_wire(&self, name: &[u8]) -> Option<usize> {
        self.zone_index.find(name).map(|z| z as usize)
    }

    fn add_cluster(&mut self, loc: &str, c: &model::KubeFedCluster) {
        let name = c.metadata.name.clone().unwrap_or_default();
        if self.cluster_index.contains_key(&name) {
            self.err(
                loc,
                format!("metadata.name: a KubeFedCluster {name:?} already exists"),
            );
            return;
        }
        // Unknown `meridian.io/*` keys refuse the cluster, as they refuse a record.
        let bad = annotation_errors("KubeFedCluster", &c.metadata);
        if !bad.is_empty() {
            for (_, e) in bad {
                self.err(loc, e);
            }
            return;
        }
        let status = c.status.clone().unwrap_or_default();
        if let Some(r) = &status.region
            && let Err(e) = check_label(r)
        {
            self.err(loc, format!("status.region: {e}"));
            return;
        }
        for (i, z) in status.zones.iter().enumerate() {
            if let Err(e) = check_label(z) {
                self.err(loc, format!("status.zones[{i}]: {e}"));
                return;
            }
        }
        let (location, source) = match annotation(&c.metadata, "location") {
            Some(v) => match GeoPoint::parse(v) {
                Ok(p) => (Some(p), Some("annotation".to_string())),
                Err(e) => {
                    self.err(loc, format!("{}: {e}", ann_field("location")));
                    return;
                }
            },
            None => region_location(status.region.as_deref()),
        };
        self.cluster_index
            .insert(name.clone(), self.cat.clusters.len());
        self.cat.clusters.push(Cluster {
            name,
            region: status.region,
            zones: status.zones,
            location,
            location_source: source,
        });
    }

    fn commit_dyn(&mut self, loc: &str, names: Vec<DynName>) -> bool {
        for (i, n) in names.iter().enumerate() {
            if let Some(&j) = self.dyn_index.get(&n.name) {
                let other = self.cat.dyn_names[j].object.clone();
                self.conflicts = true;
                self.err(
                    loc,
                    format!("name {} is already served for {other}", n.display_name()),
                );
                return false;
            }
            // An object implies a handful of names: a scan beats a set.
            if names[..i].iter().any(|m| m.name == n.name) {
                self.conflicts = true;
                self.err(loc, format!("name {} is implied twice", n.display_name()));
                return false;
            }
        }
        for mut n in names {
            let Some(zone) = self.zone_of_wire(&n.name) else {
                // Callers check their names' zones; a name outside every zone is not served.
                continue;
            };
            n.zone = zone as u32;
            self.dyn_index
                .insert(n.name.clone(), self.cat.dyn_names.len());
            self.cat.dyn_names.push(n);
        }
        true
    }
}

fn region_location(region: Option<&str>) -> (Option<GeoPoint>, Option<String>) {
    match region.and_then(|r| tables::cloud_region(r).map(|p| (r, p))) {
        Some((r, (lat, lon))) => (GeoPoint::new(lat, lon), Some(format!("region {r}"))),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    use super::options::tests::meta;

    fn located(o: Object) -> Located<Object> {
        Located {
            location: format!("test ({})", o.display_name()),
            value: o,
        }
    }

    fn entry(cluster: &str, region: &str, zone: &str, ip: &str) -> ClusterDNS {
        ClusterDNS {
            cluster: cluster.into(),
            region: Some(region.into()),
            zones: vec![zone.into()],
            load_balancer: LoadBalancerStatus {
                ingress: vec![LoadBalancerIngress {
                    ip: Some(ip.into()),
                    hostname: None,
                }],
            },
        }
    }

    fn service(dns: Vec<ClusterDNS>, spec_extra: impl FnOnce(&mut ServiceDNSRecordSpec)) -> Object {
        let mut spec = ServiceDNSRecordSpec {
            domain_ref: "fed".into(),
            ..Default::default()
        };
        spec_extra(&mut spec);
        Object::ServiceDNSRecord(ServiceDNSRecord {
            metadata: meta("web", "shop", &[]),
            spec,
            status: Some(ServiceDNSRecordStatus { domain: None, dns }),
        })
    }

    fn domain() -> Object {
        Object::Domain(Domain {
            metadata: meta("fed", "kube-federation-system", &[]),
            domain: "gslb.example.com".into(),
            name_server: Some("ns1.gslb.example.com".into()),
        })
    }

    fn names(c: &Catalog) -> Vec<String> {
        c.dyn_names
            .iter()
            .map(|d| {
                format!(
                    "{} {} -> {}",
                    d.display_name(),
                    d.targets.len(),
                    d.fallback
                        .as_ref()
                        .map(|f| wire_to_name(f).to_string())
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn kubefed_name_scheme() {
        let inputs = Inputs {
            unready: HashSet::new(),
            zone_files: vec![],
            objects: vec![
                located(domain()),
                located(service(
                    vec![
                        entry("east", "us-east1", "us-east1-b", "192.0.2.1"),
                        entry("west", "us-west1", "us-west1-a", "192.0.2.2"),
                        entry("west2", "us-west1", "us-west1-b", "2001:db8::2"),
                    ],
                    |s| {
                        s.dns_prefix = Some("www".into());
                        s.record_ttl = Some(60);
                    },
                )),
            ],
        };
        let (cat, errs) = build(&inputs, &Settings::default());
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            names(&cat),
            vec![
                "web.shop.fed.svc.gslb.example.com. 3 -> ",
                "web.shop.fed.svc.us-east1.gslb.example.com. 1 -> web.shop.fed.svc.gslb.example.com.",
                "web.shop.fed.svc.us-west1.gslb.example.com. 2 -> web.shop.fed.svc.gslb.example.com.",
                "web.shop.fed.svc.us-east1-b.us-east1.gslb.example.com. 1 -> web.shop.fed.svc.us-east1.gslb.example.com.",
                "web.shop.fed.svc.us-west1-a.us-west1.gslb.example.com. 1 -> web.shop.fed.svc.us-west1.gslb.example.com.",
                "web.shop.fed.svc.us-west1-b.us-west1.gslb.example.com. 1 -> web.shop.fed.svc.us-west1.gslb.example.com.",
            ]
        );
        assert_eq!(cat.dyn_names[0].ttl, 60);
        assert_eq!(cat.records.len(), 1);
        assert_eq!(cat.records[0].name.to_string(), "www.gslb.example.com.");
        // The synthesised zone from the Domain.
        assert_eq!(cat.zones[0].apex.to_string(), "gslb.example.com.");
        // Clusters without KubeFedCluster objects are located by the region table.
        assert!(cat.clusters[0].location.is_some());
    }

    #[test]
    fn external_name_replaces_service_name() {
        let inputs = Inputs {
            unready: HashSet::new(),
            zone_files: vec![],
            objects: vec![
                located(domain()),
                located(service(vec![entry("a", "r", "z", "192.0.2.1")], |s| {
                    s.external_name = Some("shopfront".into());
                })),
            ],
        };
        let (cat, errs) = build(&inputs, &Settings::default());
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            cat.dyn_names[0].display_name().to_string(),
            "shopfront.shop.fed.svc.gslb.example.com."
        );
    }

    #[test]
    fn errors_name_object_and_field() {
        let bad_ip = service(vec![entry("a", "r", "z", "192.0.2.300")], |_| {});
        let bad_ref = service(vec![], |s| s.domain_ref = "nope".into());
        let mut bad_ann = service(vec![], |_| {});
        if let Object::ServiceDNSRecord(r) = &mut bad_ann {
            r.metadata = meta("web2", "shop", &[("policy", "closest")]);
        }
        let inputs = Inputs {
            unready: HashSet::new(),
            zone_files: vec![],
            objects: vec![
                located(domain()),
                located(bad_ip),
                located(bad_ref),
                located(bad_ann),
            ],
        };
        let (cat, errs) = build(&inputs, &Settings::default());
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "test (ServiceDNSRecord shop/web): status.dns[0].loadBalancer.ingress[0].ip: \"192.0.2.300\" is not an IP address",
                "test (ServiceDNSRecord shop/web): spec.domainRef: no Domain named \"nope\"",
                "test (ServiceDNSRecord shop/web2): metadata.annotations[\"meridian.io/policy\"]: unknown policy \"closest\" (expected geo, failover, weighted or all)",
            ]
        );
        assert!(cat.dyn_names.is_empty());
    }

    #[test]
    fn endpoints_are_static_records_and_conflicts_are_refused() {
        let ep = Object::DNSEndpoint(DNSEndpoint {
            metadata: meta("ep", "shop", &[]),
            spec: DNSEndpointSpec {
                endpoints: vec![
                    Endpoint {
                        dns_name: "txt.gslb.example.com".into(),
                        targets: vec!["hello world".into()],
                        record_type: "TXT".into(),
                        ..Default::default()
                    },
                    Endpoint {
                        dns_name: "alias.gslb.example.com".into(),
                        targets: vec!["web.shop.fed.svc.gslb.example.com".into()],
                        record_type: "CNAME".into(),
                        record_ttl: Some(30),
                        ..Default::default()
                    },
                ],
            },
        });
        let clash = Object::DNSEndpoint(DNSEndpoint {
            metadata: meta("clash", "shop", &[]),
            spec: DNSEndpointSpec {
                endpoints: vec![Endpoint {
                    dns_name: "web.shop.fed.svc.gslb.example.com".into(),
                    targets: vec!["192.0.2.9".into()],
                    record_type: "A".into(),
                    ..Default::default()
                }],
            },
        });
        let inputs = Inputs {
            unready: HashSet::new(),
            zone_files: vec![],
            objects: vec![
                located(domain()),
                located(service(vec![entry("a", "r", "z", "192.0.2.1")], |_| {})),
                located(ep),
                located(clash),
            ],
        };
        let (cat, errs) = build(&inputs, &Settings::default());
        assert_eq!(cat.records.len(), 2);
        assert_eq!(cat.records[1].ttl, 30);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().contains(
            "spec.endpoints[0].dnsName: web.shop.fed.svc.gslb.example.com. is already served"
        ));
    }

    fn endpoint(name: &str, records: &[(&str, &str, &str)]) -> Object {
        Object::DNSEndpoint(DNSEndpoint {
            metadata: meta(name, "shop", &[]),
            spec: DNSEndpointSpec {
                endpoints: records
                    .iter()
                    .map(|(n, t, target)| Endpoint {
                        dns_name: format!("{n}.gslb.example.com"),
                        targets: vec![target.to_string()],
                        record_type: t.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            },
        })
    }

    /// Issue 12: two objects defining one name and type were merged silently.
    #[test]
    fn a_name_and_type_defined_by_two_endpoints_is_refused() {
        let inputs = Inputs {
            objects: vec![
                located(domain()),
                located(endpoint("one", &[("www", "A", "192.0.2.1")])),
                located(endpoint(
                    "two",
                    &[("other", "A", "192.0.2.3"), ("www", "A", "192.0.2.2")],
                )),
                // Another type at the same name is fine.
                located(endpoint("three", &[("www", "AAAA", "2001:db8::1")])),
            ],
            ..Default::default()
        };
        let (cat, errs) = build(&inputs, &Settings::default());
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "test (DNSEndpoint shop/two): spec.endpoints[1]: www.gslb.example.com. A is already defined by test (DNSEndpoint shop/one)"
            ]
        );
        assert_eq!(cat.records.len(), 2, "the second definer is left out whole");
    }

    /// Issue 12: CNAME chains that loop (here across a zone file and two DNSEndpoints).
    #[test]
    fn cname_loops_are_reported_and_left_out() {
        let zone = crate::source::file::parse_zone_text(
            &crate::source::include::Expanded::plain(
                "z.zone",
                "$TTL 60\n@ IN SOA ns1 h 1 2 3 4 5\n@ IN NS ns1\nns1 IN A 192.0.2.1\na IN CNAME b.gslb.example.com.\nok IN CNAME ns1\n",
            ),
            std::path::Path::new("z.zone"),
            Name::from_ascii("gslb.example.com.").expect("name"),
        )
        .expect("zone");
        let inputs = Inputs {
            zone_files: vec![zone],
            objects: vec![
                located(endpoint("b", &[("b", "CNAME", "c.gslb.example.com")])),
                located(endpoint("c", &[("c", "CNAME", "a.gslb.example.com")])),
                located(endpoint("self", &[("me", "CNAME", "me.gslb.example.com")])),
            ],
            ..Default::default()
        };
        let (cat, errs) = build(&inputs, &Settings::default());
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "z.zone: CNAME loop: a.gslb.example.com. (z.zone) -> b.gslb.example.com. (test (DNSEndpoint shop/b)) -> c.gslb.example.com. (test (DNSEndpoint shop/c)) -> a.gslb.example.com.",
                "test (DNSEndpoint shop/self): CNAME loop: me.gslb.example.com. (test (DNSEndpoint shop/self)) -> me.gslb.example.com.",
            ]
        );
        let cnames: Vec<String> = cat
            .records
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(cnames, ["ok.gslb.example.com."]);
    }
}
