//! KubeFed's MultiClusterDNS name scheme, and the dynamic names its records imply.
//!
//! The scheme is built here once and used twice: by the catalog (wire names it serves) and by
//! the Kubernetes source's status writer (the `service-<name>` / `ingress-<name>` DNSEndpoints,
//! text names). A ServiceDNSRecord `web` in namespace `shop` under Domain `fed` gives
//! `web.shop.fed.svc[.<zone>][.<region>].<domain>` (`spec.externalName` replaces `web`), and
//! `spec.dnsPrefix` `www` a CNAME `www.<domain>` to the global name. An IngressDNSRecord serves
//! its `spec.hosts`.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{RData, Record};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Serialize;
use smallvec::SmallVec;

use super::names::{WireName, check_label, lower_fqdn, name_to_wire, wire_join, wire_to_name};
use super::{Builder, Cluster, DynName, Target, region_location};
use crate::model::{self, ClusterDNS, LoadBalancerStatus};

/// KubeFed's default `recordTTL`.
pub const DEFAULT_RECORD_TTL: u32 = 180;

/// The role a dynamic name plays in KubeFed's scheme.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "scope", content = "value")]
pub enum NameScope {
    Global,
    Region(Arc<str>),
    Zone(Arc<str>),
}

/// `Kind ns/name`: how a record is named in errors, readiness keys and the admin API.
pub fn object_id(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}

/// A record's TTL: `spec.recordTTL`, else KubeFed's default.
pub fn record_ttl(spec: Option<u32>) -> u32 {
    spec.unwrap_or(DEFAULT_RECORD_TTL)
}

/// Which of a ServiceDNSRecord's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level<'a> {
    Global,
    Region(&'a str),
    Zone { region: &'a str, zone: &'a str },
}

/// The labels of a ServiceDNSRecord's names in front of its Domain.
#[derive(Clone, Copy, Debug)]
pub struct ServiceNames<'a> {
    /// `spec.externalName` when set, else `metadata.name`.
    pub service: &'a str,
    /// The field `service` comes from, for errors.
    pub service_field: &'static str,
    /// `metadata.namespace`, `default` when unset.
    pub namespace: &'a str,
    /// `spec.domainRef`: the federation.
    pub federation: &'a str,
}

impl<'a> ServiceNames<'a> {
    pub fn of(r: &'a model::ServiceDNSRecord) -> ServiceNames<'a> {
        ServiceNames {
            service: r
                .spec
                .external_name
                .as_deref()
                .filter(|s| !s.is_empty())
                .or(r.metadata.name.as_deref())
                .unwrap_or_default(),
            service_field: if r.spec.external_name.is_some() {
                "spec.externalName"
            } else {
                "metadata.name"
            },
            namespace: r.metadata.namespace.as_deref().unwrap_or("default"),
            federation: r.spec.domain_ref.as_str(),
        }
    }

    /// `<svc>.<ns>.<federation>.svc[.<zone>][.<region>]`, the labels before the domain.
    pub(super) fn labels(&self, level: Level<'a>) -> ([&'a str; 6], usize) {
        let mut l = [self.service, self.namespace, self.federation, "svc", "", ""];
        let n = match level {
            Level::Global => 4,
            Level::Region(r) => {
                l[4] = r;
                5
            }
            Level::Zone { region, zone } => {
                l[4] = zone;
                l[5] = region;
                6
            }
        };
        (l, n)
    }

    /// The name in wire form under the Domain's apex (wire form); labels are checked by the
    /// caller (`check_label`), the length here.
    pub fn wire(&self, level: Level<'a>, domain: &[u8]) -> Result<WireName, String> {
        let (l, n) = self.labels(level);
        wire_join(&l[..n], domain)
    }

    /// The name as text under `domain` (without its final dot), as external-dns writes it.
    pub fn text(&self, level: Level<'a>, domain: &str) -> String {
        let (l, n) = self.labels(level);
        let mut out = l[..n].join(".");
        out.push('.');
        out.push_str(domain.trim_end_matches('.'));
        out
    }
}

/// The `spec.dnsPrefix` alias under `domain`: `<prefix>.<domain>`.
pub fn prefix_name(prefix: &str, domain: &str) -> String {
    format!("{prefix}.{domain}")
}

/// The DNSEndpoint KubeFed derives from a ServiceDNSRecord is `service-<name>`.
pub const SERVICE_ENDPOINT_PREFIX: &str = "service";
/// The DNSEndpoint KubeFed derives from an IngressDNSRecord is `ingress-<name>`.
pub const INGRESS_ENDPOINT_PREFIX: &str = "ingress";

/// KubeFed's name for the DNSEndpoint of a record (`prefix` one of the two above).
pub fn endpoint_name(prefix: &str, record: &str) -> String {
    format!("{prefix}-{record}")
}

/// Whether an owner reference names a ServiceDNSRecord or IngressDNSRecord: a DNSEndpoint it
/// owns was derived from the record and repeats what the record serves.
pub fn is_record_owner(o: &OwnerReference) -> bool {
    o.api_version == model::GROUP_MULTICLUSTERDNS
        && (o.kind == "ServiceDNSRecord" || o.kind == "IngressDNSRecord")
}

/// Splits load-balancer ingress entries into addresses and hostnames; `field` prefixes errors.
fn lb_targets(
    lb: &LoadBalancerStatus,
    field: &dyn std::fmt::Display,
) -> Result<(SmallVec<[IpAddr; 1]>, Vec<String>), String> {
    let mut addrs = SmallVec::new();
    let mut hosts = Vec::new();
    for (j, ing) in lb.ingress.iter().enumerate() {
        if let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) {
            let a: IpAddr = ip.trim().parse().map_err(|_| {
                format!("{field}.loadBalancer.ingress[{j}].ip: {ip:?} is not an IP address")
            })?;
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        } else if let Some(h) = ing.hostname.as_deref().filter(|s| !s.is_empty()) {
            lower_fqdn(h)
                .map_err(|e| format!("{field}.loadBalancer.ingress[{j}].hostname: {e}"))?;
            hosts.push(h.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    Ok((addrs, hosts))
}

impl Builder {
    /// The cluster of a status entry; clusters not registered as KubeFedCluster are added with
    /// the entry's region and zones (located by the built-in region table, if at all).
    pub(super) fn cluster_for(&mut self, entry: &ClusterDNS) -> usize {
        if let Some(&i) = self.cluster_index.get(&entry.cluster) {
            return i;
        }
        let (location, location_source) = region_location(entry.region.as_deref());
        let i = self.cat.clusters.len();
        self.cluster_index.insert(entry.cluster.clone(), i);
        self.cat.clusters.push(Cluster {
            name: entry.cluster.clone(),
            region: entry.region.clone(),
            zones: entry.zones.clone(),
            location,
            location_source,
        });
        i
    }

    pub(super) fn add_service_record(&mut self, loc: &str, r: &model::ServiceDNSRecord) {
        // Shared, not borrowed: errors are reported through `self` meanwhile.
        let domains = self.domains.clone();
        let meta_ns = r.metadata.namespace.as_deref();
        let object: Arc<str> = object_id(
            "ServiceDNSRecord",
            meta_ns.unwrap_or(""),
            r.metadata.name.as_deref().unwrap_or(""),
        )
        .into();
        let scheme = ServiceNames::of(r);
        let (svc, ns) = (scheme.service, scheme.namespace);
        let field = scheme.service_field;
        // Every problem of the record is reported (roughly in field order), not just the first.
        let mut failed = false;
        if let Err(e) = check_label(svc) {
            self.err(loc, format!("{field}: {e}"));
            failed = true;
        }
        if let Err(e) = check_label(ns) {
            self.err(loc, format!("metadata.namespace: {e}"));
            failed = true;
        }
        let options = self.options(loc, &r.metadata);
        failed |= options.is_none();
        let fed = r.spec.domain_ref.as_str();
        let candidates = match check_label(fed) {
            Err(e) => {
                self.err(loc, format!("spec.domainRef: {e}"));
                None
            }
            Ok(()) => {
                let c = domains.get(fed);
                if c.is_none() {
                    self.err(loc, format!("spec.domainRef: no Domain named {fed:?}"));
                }
                c
            }
        };
        failed |= candidates.is_none();
        let empty = Vec::new();
        let entries = r.status.as_ref().map_or(&empty, |s| &s.dns);
        let mut parsed = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if let Some(reg) = &entry.region
                && let Err(e) = check_label(reg)
            {
                self.err(loc, format!("status.dns[{i}].region: {e}"));
                failed = true;
            }
            for (j, z) in entry.zones.iter().enumerate() {
                if let Err(e) = check_label(z) {
                    self.err(loc, format!("status.dns[{i}].zones[{j}]: {e}"));
                    failed = true;
                }
            }
            match lb_targets(&entry.load_balancer, &format_args!("status.dns[{i}]")) {
                Ok(t) => parsed.push(t),
                Err(e) => {
                    self.err(loc, e);
                    failed = true;
                }
            }
            if entry.cluster.is_empty() {
                self.err(loc, format!("status.dns[{i}].cluster: missing"));
                failed = true;
            }
        }
        let (Some(options), Some(candidates), false) = (options, candidates, failed) else {
            return;
        };
        // Prefer a Domain in the record's namespace; else the first by name.
        let (_, domain, domain_wire) = candidates
            .iter()
            .find(|(n, _, _)| n.as_deref() == Some(ns))
            .unwrap_or(&candidates[0]);
        let ttl = record_ttl(r.spec.record_ttl);
        let mk = |level: Level| scheme.wire(level, domain_wire);
        let global = match mk(Level::Global) {
            Ok(n) => n,
            Err(e) => return self.err(loc, format!("metadata.name: {e}")),
        };
        let mut targets: Vec<(Target, Option<&str>, &[String])> = Vec::with_capacity(entries.len());
        for (entry, (addrs, hostnames)) in entries.iter().zip(parsed) {
            let cluster = self.cluster_for(entry);
            let ready = self.ready(&object, &entry.cluster);
            targets.push((
                Target {
                    cluster,
                    addrs,
                    hostnames,
                    ready,
                },
                entry.region.as_deref(),
                &entry.zones,
            ));
        }
        let mut names = vec![DynName {
            name: global.clone(),
            zone: 0,
            object: object.clone(),
            scope: NameScope::Global,
            ttl,
            options: options.clone(),
            targets: targets.iter().map(|t| t.0.clone()).collect(),
            fallback: None,
        }];
        // Region and zone names, in first-seen order so the output is stable.
        let mut regions: Vec<&str> = Vec::new();
        let mut zones: Vec<(&str, &str)> = Vec::new();
        for (_, region, zs) in &targets {
            if let Some(r) = *region {
                if !regions.contains(&r) {
                    regions.push(r);
                }
                for z in zs.iter() {
                    if !zones.contains(&(r, z.as_str())) {
                        zones.push((r, z));
                    }
                }
            }
        }
        let mut region_names: Vec<WireName> = Vec::with_capacity(regions.len());
        for reg in &regions {
            let name = match mk(Level::Region(reg)) {
                Ok(n) => n,
                Err(e) => return self.err(loc, format!("status.dns: region {reg}: {e}")),
            };
            region_names.push(name.clone());
            names.push(DynName {
                name,
                zone: 0,
                object: object.clone(),
                scope: NameScope::Region(Arc::from(*reg)),
                ttl,
                options: options.clone(),
                targets: targets
                    .iter()
                    .filter(|t| t.1 == Some(*reg))
                    .map(|t| t.0.clone())
                    .collect(),
                fallback: Some(global.clone()),
            });
        }
        for (reg, z) in &zones {
            let name = match mk(Level::Zone {
                region: reg,
                zone: z,
            }) {
                Ok(n) => n,
                Err(e) => return self.err(loc, format!("status.dns: zone {z}: {e}")),
            };
            let region_name = regions
                .iter()
                .position(|r| r == reg)
                .map(|i| region_names[i].clone());
            names.push(DynName {
                name,
                zone: 0,
                object: object.clone(),
                scope: NameScope::Zone(Arc::from(*z)),
                ttl,
                options: options.clone(),
                targets: targets
                    .iter()
                    .filter(|t| t.1 == Some(*reg) && t.2.iter().any(|x| x == z))
                    .map(|t| t.0.clone())
                    .collect(),
                fallback: region_name,
            });
        }
        if self.zone_of_wire(&global).is_none() {
            return self.err(
                loc,
                format!("spec.domainRef: {domain} is not a served zone"),
            );
        }
        let prefix_record = match r.spec.dns_prefix.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => match lower_fqdn(&prefix_name(p, &domain.to_string())) {
                Ok(n) => Some(Record::from_rdata(
                    n,
                    ttl,
                    RData::CNAME(CNAME(wire_to_name(&global))),
                )),
                Err(e) => return self.err(loc, format!("spec.dnsPrefix: {e}")),
            },
            None => None,
        };
        if let Some(rec) = &prefix_record
            && name_to_wire(&rec.name).is_ok_and(|w| self.dyn_index.contains_key(&w))
        {
            self.conflicts = true;
            return self.err(
                loc,
                format!("spec.dnsPrefix: {} is already a served name", rec.name),
            );
        }
        if self.commit_dyn(loc, names) {
            if let Some(rec) = &prefix_record {
                self.note_cnames(std::slice::from_ref(rec), &Arc::from(loc));
            }
            self.cat.records.extend(prefix_record);
        }
    }

    /// Kubernetes readiness of a record's target in one cluster.
    pub(super) fn ready(&self, object: &str, cluster: &str) -> bool {
        // Most catalogs have every target ready: skip building the lookup key.
        self.unready.is_empty()
            || !self
                .unready
                .contains(&(object.to_string(), cluster.to_string()))
    }

    pub(super) fn add_ingress_record(&mut self, loc: &str, r: &model::IngressDNSRecord) {
        let object: Arc<str> = object_id(
            "IngressDNSRecord",
            r.metadata.namespace.as_deref().unwrap_or(""),
            r.metadata.name.as_deref().unwrap_or(""),
        )
        .into();
        // Every problem of the record is reported, in field order, not just the first.
        let options = self.options(loc, &r.metadata);
        let mut failed = options.is_none();
        let ttl = record_ttl(r.spec.record_ttl);
        let mut targets = Vec::new();
        for (i, entry) in r.status.iter().flat_map(|s| s.dns.iter()).enumerate() {
            let (addrs, hostnames) =
                match lb_targets(&entry.load_balancer, &format_args!("status.dns[{i}]")) {
                    Ok(t) => t,
                    Err(e) => {
                        self.err(loc, e);
                        failed = true;
                        continue;
                    }
                };
            let cluster = self.cluster_for(&ClusterDNS {
                cluster: entry.cluster.clone(),
                ..Default::default()
            });
            let ready = self.ready(&object, &entry.cluster);
            targets.push(Target {
                cluster,
                addrs,
                hostnames,
                ready,
            });
        }
        let mut hosts = Vec::new();
        for (i, host) in r.spec.hosts.iter().enumerate() {
            let wire = match lower_fqdn(host).and_then(|n| Ok((name_to_wire(&n)?, n))) {
                Ok(w) => w,
                Err(e) => {
                    self.err(loc, format!("spec.hosts[{i}]: {e}"));
                    failed = true;
                    continue;
                }
            };
            if self.zone_of_wire(&wire.0).is_none() {
                self.err(
                    loc,
                    format!("spec.hosts[{i}]: {} is outside every served zone", wire.1),
                );
                failed = true;
                continue;
            }
            hosts.push(wire.0);
        }
        let Some(options) = options.filter(|_| !failed) else {
            return;
        };
        let mut names = Vec::new();
        for wire in hosts {
            names.push(DynName {
                name: wire,
                zone: 0,
                object: object.clone(),
                scope: NameScope::Global,
                ttl,
                options: options.clone(),
                targets: targets.clone(),
                fallback: None,
            });
        }
        self.commit_dyn(loc, names);
    }
}
