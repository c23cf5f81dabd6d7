//! The catalog: every source's objects and zone files merged into one validated, logical view —
//! zones, static records, member clusters and the health-dependent ("dynamic") names that
//! federated records imply under KubeFed's name scheme. Pure: no I/O, no clock.
//!
//! An object that does not validate is reported (file/object and field) and left out; the rest
//! of the catalog is still built, so one bad object never takes down the others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{CNAME, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use smallvec::SmallVec;

use crate::config::{HealthDefaults, Settings};
use crate::geo::{GeoPoint, tables};
use crate::model::{
    self, AllDown, ClusterDNS, LoadBalancerStatus, MAX_PROBE_INTERVAL, MAX_PROBE_TIMEOUT, Object,
    Policy, parse_duration_within,
};
use crate::source::file::ZoneFile;
use crate::source::{Located, SourceError};

/// KubeFed's default `recordTTL`.
pub const DEFAULT_RECORD_TTL: u32 = 180;
/// external-dns' default TTL for endpoints without `recordTTL`.
pub const DEFAULT_ENDPOINT_TTL: u32 = 300;

#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    pub name: String,
    pub region: Option<String>,
    pub zones: Vec<String>,
    pub location: Option<GeoPoint>,
    /// Where the location came from: `annotation`, `region <name>`, or absent.
    pub location_source: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Zone {
    pub apex: Name,
    pub soa: Record,
    pub ns: Vec<Record>,
    /// File or object that defined the zone.
    pub origin: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    Http,
    Https,
    Tcp,
    None,
}

impl FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" => Ok(ProbeKind::Http),
            "https" => Ok(ProbeKind::Https),
            "tcp" => Ok(ProbeKind::Tcp),
            "none" => Ok(ProbeKind::None),
            o => Err(format!(
                "unknown probe {o:?} (expected http, https, tcp or none)"
            )),
        }
    }
}

/// How a record's targets are health-checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub port: u16,
    pub path: String,
    pub host: Option<String>,
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Inclusive range of HTTP statuses that count as healthy.
    pub expect_status: (u16, u16),
    /// Substring the HTTP body must contain, if set.
    pub expect_body: Option<String>,
    /// Skip TLS certificate verification (HTTPS probes).
    pub insecure: bool,
    /// PEM file of the CA(s) HTTPS probes verify against instead of the system roots
    /// (`meridian.io/probe-ca`, an absolute path on meridian's filesystem).
    pub ca: Option<std::path::PathBuf>,
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Behaviour from `meridian.io/*` annotations.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordOptions {
    pub policy: Policy,
    pub failover_order: Vec<String>,
    pub weights: BTreeMap<String, u32>,
    pub all_down: AllDown,
    pub probe: ProbeSpec,
}

/// The role a dynamic name plays in KubeFed's scheme.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "scope", content = "value")]
pub enum NameScope {
    Global,
    Region(Arc<str>),
    Zone(Arc<str>),
}

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

/// A lowercased, uncompressed wire-form name, shared between the catalog and the snapshot's
/// name table (the table's key is the catalog's allocation, not a copy).
pub type WireName = Arc<[u8]>;

/// A wire name as a hickory `Name` (for display and the admin API; never on the query path).
/// Wire names here are built from validated labels, so decoding cannot fail in practice; a name
/// that does not decode shows as the root.
pub fn wire_to_name(w: &[u8]) -> Name {
    Name::read(&mut BinDecoder::new(w)).unwrap_or_else(|_| Name::root())
}

/// Lowercased wire form of a `Name`.
pub fn name_to_wire(n: &Name) -> Result<WireName, String> {
    let mut v = Vec::with_capacity(n.len() + 2);
    for label in n.iter() {
        if label.len() > 63 {
            return Err(format!("label of {n} is longer than 63 bytes"));
        }
        v.push(label.len() as u8);
        v.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    v.push(0);
    if v.len() > 255 {
        return Err(format!("{n} is longer than 255 bytes"));
    }
    Ok(v.into())
}

/// `labels` (checked by `check_label`) in front of the wire name `suffix`, lowercased.
fn wire_join(labels: &[&str], suffix: &[u8]) -> Result<WireName, String> {
    let len = labels.iter().map(|l| l.len() + 1).sum::<usize>() + suffix.len();
    if len > 255 {
        let text: Vec<&str> = labels.to_vec();
        return Err(format!(
            "{}.{} is longer than 255 bytes",
            text.join("."),
            wire_to_name(suffix)
        ));
    }
    let mut v = Vec::with_capacity(len);
    for l in labels {
        v.push(l.len() as u8);
        v.extend(l.bytes().map(|b| b.to_ascii_lowercase()));
    }
    v.extend_from_slice(suffix);
    Ok(v.into())
}

/// Whether wire name `name` is `apex` or below it (label-aligned suffix).
fn wire_within(name: &[u8], apex: &[u8]) -> bool {
    let mut i = 0;
    while name.len() - i >= apex.len() {
        if name[i..] == *apex {
            return true;
        }
        let l = name[i] as usize;
        if l == 0 {
            break;
        }
        i += l + 1;
    }
    false
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

fn ser_name<S: serde::Serializer>(n: &WireName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&wire_to_name(n).to_string())
}

fn ser_opt_name<S: serde::Serializer>(n: &Option<WireName>, s: S) -> Result<S::Ok, S::Error> {
    match n {
        Some(n) => s.serialize_some(&wire_to_name(n).to_string()),
        None => s.serialize_none(),
    }
}

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub zones: Vec<Zone>,
    pub records: Vec<Record>,
    pub dyn_names: Vec<DynName>,
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

struct Builder<'a> {
    settings: &'a Settings,
    unready: &'a HashSet<(String, String)>,
    cat: Catalog,
    cluster_index: HashMap<String, usize>,
    /// Wire names already used by dynamic names.
    dyn_index: HashMap<WireName, usize, foldhash::fast::RandomState>,
    /// Wire form of each zone's apex, by zone index.
    apex_wires: Vec<WireName>,
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
    let mut b = Builder {
        settings,
        unready,
        cat: Catalog::default(),
        cluster_index: HashMap::new(),
        dyn_index: HashMap::default(),
        apex_wires: Vec::new(),
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
    for o in objects() {
        if let Object::KubeFedCluster(c) = &o.value {
            b.add_cluster(&o.location, c);
        }
    }
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
            Object::ServiceDNSRecord(r) => b.add_service_record(&o.location, r, &domains),
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
    (b.cat, b.errors)
}

/// A record's `meridian.io/*` annotations and the options they give.
type OptionsEntry = (Vec<(String, String)>, Arc<RecordOptions>);

/// The `meridian.io/*` annotations of an object, in key order.
fn meridian_annotations(meta: &ObjectMeta) -> impl Iterator<Item = (&String, &String)> {
    meta.annotations
        .iter()
        .flat_map(|a| {
            a.range::<str, _>((
                std::ops::Bound::Included(model::ANNOTATION_PREFIX),
                std::ops::Bound::Unbounded,
            ))
        })
        .take_while(|(k, _)| k.starts_with(model::ANNOTATION_PREFIX))
}

/// Wire form of a zone apex. hickory `Name`s already hold DNS's length limits, so this cannot
/// fail; if it did, the empty key contains no name, rather than the root's, which contains all.
fn apex_wire(apex: &Name) -> WireName {
    name_to_wire(apex).unwrap_or_else(|_| Arc::from(&b""[..]))
}

/// Domains by name: (namespace, apex, apex in wire form).
type Domains = HashMap<String, Vec<(Option<String>, Name, WireName)>>;

fn lower_fqdn(s: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(s.trim()).map_err(|e| format!("invalid name {s:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// A single DNS label (region and zone names, namespaces, service names).
fn check_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS label (1-63 letters, digits, '-' or '_')"
        ))
    }
}

fn annotation<'m>(meta: &'m ObjectMeta, key: &str) -> Option<&'m str> {
    let map = meta.annotations.as_ref()?;
    // The full key on the stack: this runs a dozen times per record.
    let p = model::ANNOTATION_PREFIX.as_bytes();
    let mut buf = [0u8; 96];
    let n = p.len() + key.len();
    if n > buf.len() {
        return map
            .get(&format!("{}{key}", model::ANNOTATION_PREFIX))
            .map(|s| s.as_str());
    }
    buf[..p.len()].copy_from_slice(p);
    buf[p.len()..n].copy_from_slice(key.as_bytes());
    let full = std::str::from_utf8(&buf[..n]).ok()?;
    map.get(full).map(|s| s.as_str())
}

fn ann_field(key: &str) -> String {
    format!(
        "metadata.annotations[\"{}{key}\"]",
        model::ANNOTATION_PREFIX
    )
}

/// The `meridian.io/*` annotations a ServiceDNSRecord or IngressDNSRecord may carry.
pub const RECORD_ANNOTATIONS: &[&str] = &[
    "policy",
    "failover-order",
    "weights",
    "all-down",
    "probe",
    "probe-port",
    "probe-path",
    "probe-host",
    "probe-interval",
    "probe-timeout",
    "probe-expect-status",
    "probe-body",
    "probe-insecure",
    "probe-ca",
    "rise",
    "fall",
];

/// The `meridian.io/*` annotations a KubeFedCluster may carry.
pub const CLUSTER_ANNOTATIONS: &[&str] = &["location"];

/// The `meridian.io/*` annotation keys (without the prefix) meaningful on an object of `kind`.
pub fn known_annotations(kind: &str) -> &'static [&'static str] {
    match kind {
        "ServiceDNSRecord" | "IngressDNSRecord" => RECORD_ANNOTATIONS,
        "KubeFedCluster" => CLUSTER_ANNOTATIONS,
        _ => &[],
    }
}

/// Whether building the catalog checks the `meridian.io/*` annotations of a `kind` (records'
/// and clusters', whichever source they come from).
pub fn checks_annotations(kind: &str) -> bool {
    matches!(
        kind,
        "ServiceDNSRecord" | "IngressDNSRecord" | "KubeFedCluster"
    )
}

/// Error for an unknown `meridian.io/*` annotation key on a `kind`; a typo would otherwise
/// silently drop the behaviour it asks for.
fn unknown_annotation(kind: &str, key: &str) -> String {
    let known = known_annotations(kind);
    let expected = if known.is_empty() {
        format!("{kind} takes no {} annotations", model::ANNOTATION_PREFIX)
    } else {
        format!(
            "expected one of {}",
            known
                .iter()
                .map(|k| format!("{}{k}", model::ANNOTATION_PREFIX))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!("metadata.annotations[\"{key}\"]: unknown annotation ({expected})")
}

/// Every problem with the `meridian.io/*` annotations of an object of `kind`, one per key (in
/// key order): unknown keys and values that do not parse. Each pair is the full annotation key
/// and the message (naming the field). Checks that need two annotations together (weights of a
/// weighted policy) are left to [`record_options`].
pub fn annotation_errors(kind: &str, meta: &ObjectMeta) -> Vec<(String, String)> {
    let known = known_annotations(kind);
    let mut out = Vec::new();
    for (key, value) in meridian_annotations(meta) {
        let short = &key[model::ANNOTATION_PREFIX.len()..];
        if !known.contains(&short) {
            out.push((key.clone(), unknown_annotation(kind, key)));
            continue;
        }
        let alone = ObjectMeta {
            annotations: Some(BTreeMap::from([(key.clone(), value.clone())])),
            ..Default::default()
        };
        let result = if known == CLUSTER_ANNOTATIONS {
            GeoPoint::parse(value)
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", ann_field(short)))
        } else {
            record_options(&alone, &HealthDefaults::default()).map(|_| ())
        };
        if let Err(e) = result {
            out.push((key.clone(), e));
        }
    }
    out
}

/// Reads the `meridian.io/*` annotations of a record.
pub fn record_options(meta: &ObjectMeta, h: &HealthDefaults) -> Result<RecordOptions, String> {
    let field_err = |key: &str, e: String| format!("{}: {e}", ann_field(key));
    if let Some((key, _)) = meridian_annotations(meta)
        .find(|(k, _)| !RECORD_ANNOTATIONS.contains(&&k[model::ANNOTATION_PREFIX.len()..]))
    {
        return Err(unknown_annotation("ServiceDNSRecord", key));
    }
    let policy = match annotation(meta, "policy") {
        Some(v) => v.parse().map_err(|e| field_err("policy", e))?,
        None => Policy::Geo,
    };
    let all_down = match annotation(meta, "all-down") {
        Some(v) => v.parse().map_err(|e| field_err("all-down", e))?,
        None => AllDown::All,
    };
    let failover_order: Vec<String> = annotation(meta, "failover-order")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut weights = BTreeMap::new();
    if let Some(v) = annotation(meta, "weights") {
        for part in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (c, w) = part
                .split_once('=')
                .ok_or_else(|| field_err("weights", format!("{part:?} is not cluster=weight")))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| field_err("weights", format!("weight {w:?} is not a whole number")))?;
            weights.insert(c.trim().to_string(), w);
        }
    }
    if policy == Policy::Weighted && weights.values().all(|w| *w == 0) && !weights.is_empty() {
        return Err(field_err("weights", "every weight is 0".to_string()));
    }
    let kind: ProbeKind = match annotation(meta, "probe") {
        Some(v) => v.parse().map_err(|e| field_err("probe", e))?,
        None => h.probe.parse().map_err(|e| field_err("probe", e))?,
    };
    let default_port = match kind {
        ProbeKind::Https => 443,
        _ => 80,
    };
    let port = match annotation(meta, "probe-port") {
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| field_err("probe-port", format!("{v:?} is not a port")))?,
        None => h.probe_port.unwrap_or(default_port),
    };
    let path = match annotation(meta, "probe-path") {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => return Err(field_err("probe-path", format!("{p:?} must start with /"))),
        None => h.probe_path.clone(),
    };
    // Bounded: a huge interval would never probe (and overflowed the clock arithmetic).
    let dur = |key: &str, default: Duration, max: Duration| -> Result<Duration, String> {
        match annotation(meta, key) {
            Some(v) => parse_duration_within(v, Duration::from_millis(10), max)
                .map_err(|e| field_err(key, e.to_string())),
            None => Ok(default),
        }
    };
    let count = |key: &str, default: u32| -> Result<u32, String> {
        match annotation(meta, key) {
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| field_err(key, format!("{v:?} is not a number in 1..=100"))),
            None => Ok(default),
        }
    };
    let expect_status = match annotation(meta, "probe-expect-status") {
        Some(v) => parse_status_range(v).map_err(|e| field_err("probe-expect-status", e))?,
        None => (200, 399),
    };
    let insecure = match annotation(meta, "probe-insecure") {
        Some("true") => true,
        Some("false") | None => false,
        Some(v) => {
            return Err(field_err(
                "probe-insecure",
                format!("{v:?} is not true or false"),
            ));
        }
    };
    let ca = match annotation(meta, "probe-ca").map(str::trim) {
        // Absolute only: the catalog has no notion of a base directory (records may come from
        // the Kubernetes API), and a path relative to the working directory would be a trap.
        Some(p) if std::path::Path::new(p).is_absolute() => Some(std::path::PathBuf::from(p)),
        Some(p) => {
            return Err(field_err(
                "probe-ca",
                format!("{p:?} must be an absolute path"),
            ));
        }
        None => None,
    };
    Ok(RecordOptions {
        policy,
        failover_order,
        weights,
        all_down,
        probe: ProbeSpec {
            kind,
            port,
            path,
            host: annotation(meta, "probe-host").map(str::to_string),
            interval: dur("probe-interval", h.interval, MAX_PROBE_INTERVAL)?,
            timeout: dur("probe-timeout", h.timeout, MAX_PROBE_TIMEOUT)?,
            rise: count("rise", h.rise)?,
            fall: count("fall", h.fall)?,
            expect_status,
            expect_body: annotation(meta, "probe-body").map(str::to_string),
            insecure,
            ca,
        },
    })
}

fn parse_status_range(v: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{v:?} is not a status or range such as 200-299");
    let (a, b) = match v.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (v.trim(), v.trim()),
    };
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
        return Err(bad());
    }
    Ok((a, b))
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

impl Builder<'_> {
    fn err(&mut self, location: &str, message: impl Into<String>) {
        self.errors.push(SourceError::new(location, message));
    }

    fn zone_of(&self, name: &Name) -> Option<usize> {
        self.zone_of_wire(&name_to_wire(name).ok()?)
    }

    /// The zone holding a wire name: the longest apex that contains it.
    fn zone_of_wire(&self, name: &[u8]) -> Option<usize> {
        self.apex_wires
            .iter()
            .enumerate()
            .filter(|(_, a)| wire_within(name, a))
            .max_by_key(|(_, a)| a.len())
            .map(|(i, _)| i)
    }

    fn push_zone(&mut self, z: Zone) {
        self.apex_wires.push(apex_wire(&z.apex));
        self.cat.zones.push(z);
    }

    fn add_zone_file(&mut self, zf: &ZoneFile) {
        let loc = zf.path.display().to_string();
        let apex = zf.origin.to_lowercase();
        let mut soa = None;
        let mut ns = Vec::new();
        let mut records = Vec::new();
        for r in &zf.records {
            let mut r = r.clone();
            r.name = r.name.to_lowercase();
            if !apex.zone_of(&r.name) {
                self.err(
                    &loc,
                    format!(
                        "record {} {} is outside the zone {apex}",
                        r.name,
                        r.record_type()
                    ),
                );
                return;
            }
            if r.dns_class != DNSClass::IN {
                self.err(&loc, format!("record {}: only class IN is served", r.name));
                return;
            }
            match r.record_type() {
                RecordType::SOA if r.name == apex => soa = Some(r),
                RecordType::SOA => {
                    self.err(
                        &loc,
                        format!("SOA at {} is not at the zone apex {apex}", r.name),
                    );
                    return;
                }
                RecordType::NS if r.name == apex => ns.push(r),
                _ => records.push(r),
            }
        }
        let Some(soa) = soa else {
            self.err(&loc, format!("zone {apex} has no SOA record at its apex"));
            return;
        };
        if ns.is_empty() {
            self.err(&loc, format!("zone {apex} has no NS records at its apex"));
            return;
        }
        if let Some(z) = self.cat.zones.iter().find(|z| z.apex == apex) {
            let other = z.origin.clone();
            self.err(&loc, format!("zone {apex} is already defined by {other}"));
            return;
        }
        let origin: Arc<str> = loc.as_str().into();
        self.note_cnames(&records, &origin);
        self.push_zone(Zone {
            apex,
            soa,
            ns,
            origin: loc,
        });
        self.cat.records.extend(records);
    }

    /// A Domain names a zone; one is synthesised unless a zone file already covers it.
    fn add_domain(&mut self, loc: &str, d: &model::Domain) -> Option<Name> {
        let apex = match lower_fqdn(&d.domain) {
            Ok(n) if n.num_labels() > 0 => n,
            Ok(_) => {
                self.err(loc, "domain: the root cannot be served");
                return None;
            }
            Err(e) => {
                self.err(loc, format!("domain: {e}"));
                return None;
            }
        };
        if self.zone_of(&apex).is_some() {
            return Some(apex);
        }
        let ns_name = match d.name_server.as_deref() {
            Some(ns) => match lower_fqdn(ns) {
                Ok(n) => n,
                Err(e) => {
                    self.err(loc, format!("nameServer: {e}"));
                    return None;
                }
            },
            None => match Name::from_ascii("ns1").and_then(|n| n.append_domain(&apex)) {
                Ok(n) => n,
                Err(e) => {
                    self.err(loc, format!("domain: {e}"));
                    return None;
                }
            },
        };
        let rname = Name::from_ascii("hostmaster")
            .and_then(|n| n.append_domain(&apex))
            .unwrap_or_else(|_| apex.clone());
        let soa = Record::from_rdata(
            apex.clone(),
            3600,
            RData::SOA(SOA::new(
                ns_name.clone(),
                rname,
                1,
                7200,
                3600,
                1_209_600,
                60,
            )),
        );
        let ns = vec![Record::from_rdata(
            apex.clone(),
            3600,
            RData::NS(NS(ns_name)),
        )];
        self.push_zone(Zone {
            apex: apex.clone(),
            soa,
            ns,
            origin: loc.to_string(),
        });
        Some(apex)
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

    /// The cluster of a status entry; clusters not registered as KubeFedCluster are added with
    /// the entry's region and zones (located by the built-in region table, if at all).
    fn cluster_for(&mut self, entry: &ClusterDNS) -> usize {
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

    fn options(&mut self, loc: &str, meta: &ObjectMeta) -> Option<Arc<RecordOptions>> {
        use std::hash::{BuildHasher, Hash, Hasher};
        // Fixed seed: the hash only picks a bucket of this map, whose entries are compared.
        let mut h = foldhash::fast::FixedState::with_seed(0x6d65_7269).build_hasher();
        for (k, v) in meridian_annotations(meta) {
            k.hash(&mut h);
            v.hash(&mut h);
        }
        let hash = h.finish();
        if let Some(hit) = self.options_cache.get(&hash).and_then(|bucket| {
            bucket.iter().find(|(pairs, _)| {
                pairs
                    .iter()
                    .map(|(k, v)| (k, v))
                    .eq(meridian_annotations(meta))
            })
        }) {
            return Some(hit.1.clone());
        }
        match record_options(meta, &self.settings.health) {
            Ok(o) => {
                let o = Arc::new(o);
                let pairs = meridian_annotations(meta)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                self.options_cache
                    .entry(hash)
                    .or_default()
                    .push((pairs, o.clone()));
                Some(o)
            }
            Err(e) => {
                // Every bad annotation, not just the first; the cross-annotation check's
                // error when each is fine alone.
                let each = annotation_errors("ServiceDNSRecord", meta);
                if each.is_empty() {
                    self.err(loc, e);
                }
                for (_, e) in each {
                    self.err(loc, e);
                }
                None
            }
        }
    }

    /// Registers dynamic names, all or none: a clash leaves the whole object out.
    fn commit_dyn(&mut self, loc: &str, names: Vec<DynName>) -> bool {
        for (i, n) in names.iter().enumerate() {
            if let Some(&j) = self.dyn_index.get(&n.name) {
                let other = self.cat.dyn_names[j].object.clone();
                self.err(
                    loc,
                    format!("name {} is already served for {other}", n.display_name()),
                );
                return false;
            }
            // An object implies a handful of names: a scan beats a set.
            if names[..i].iter().any(|m| m.name == n.name) {
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

    fn add_service_record(&mut self, loc: &str, r: &model::ServiceDNSRecord, domains: &Domains) {
        let meta_ns = r.metadata.namespace.as_deref();
        let object: Arc<str> = format!(
            "ServiceDNSRecord {}/{}",
            meta_ns.unwrap_or(""),
            r.metadata.name.as_deref().unwrap_or("")
        )
        .into();
        let ns = meta_ns.unwrap_or("default");
        let svc = r
            .spec
            .external_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(r.metadata.name.as_deref())
            .unwrap_or_default();
        let field = if r.spec.external_name.is_some() {
            "spec.externalName"
        } else {
            "metadata.name"
        };
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
        let ttl = r.spec.record_ttl.unwrap_or(DEFAULT_RECORD_TTL);
        // KubeFed's scheme: <svc>.<ns>.<federation>.svc[.<zone>][.<region>].<domain>
        let mk = |scope: &[&str]| -> Result<WireName, String> {
            let mut labels: [&str; 6] = [svc, ns, fed, "svc", "", ""];
            labels[4..4 + scope.len()].copy_from_slice(scope);
            wire_join(&labels[..4 + scope.len()], domain_wire)
        };
        let global = match mk(&[]) {
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
            let name = match mk(&[reg]) {
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
            let name = match mk(&[z, reg]) {
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
            Some(p) => match lower_fqdn(&format!("{p}.{domain}")) {
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
    fn ready(&self, object: &str, cluster: &str) -> bool {
        // Most catalogs have every target ready: skip building the lookup key.
        self.unready.is_empty()
            || !self
                .unready
                .contains(&(object.to_string(), cluster.to_string()))
    }

    fn add_ingress_record(&mut self, loc: &str, r: &model::IngressDNSRecord) {
        let object: Arc<str> = format!(
            "IngressDNSRecord {}/{}",
            r.metadata.namespace.as_deref().unwrap_or(""),
            r.metadata.name.as_deref().unwrap_or("")
        )
        .into();
        // Every problem of the record is reported, in field order, not just the first.
        let options = self.options(loc, &r.metadata);
        let mut failed = options.is_none();
        let ttl = r.spec.record_ttl.unwrap_or(DEFAULT_RECORD_TTL);
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

    fn add_endpoint(&mut self, loc: &str, e: &model::DNSEndpoint) {
        // DNSEndpoints that meridian itself derives from records (KubeFed's `service-<name>`)
        // repeat what the record already serves.
        let derived = e.metadata.owner_references.iter().flatten().any(|o| {
            (o.kind == "ServiceDNSRecord" || o.kind == "IngressDNSRecord")
                && o.api_version == model::GROUP_MULTICLUSTERDNS
        });
        if derived {
            return;
        }
        let mut out = Vec::new();
        let mut defined: Vec<(Name, RecordType)> = Vec::new();
        // Every problem of the object is reported, endpoint by endpoint, not just the first.
        let mut failed = false;
        for (i, ep) in e.spec.endpoints.iter().enumerate() {
            let f = format!("spec.endpoints[{i}]");
            let name = match lower_fqdn(&ep.dns_name) {
                Ok(n) => n,
                Err(err) => {
                    self.err(loc, format!("{f}.dnsName: {err}"));
                    failed = true;
                    continue;
                }
            };
            if self.zone_of(&name).is_none() {
                self.err(
                    loc,
                    format!("{f}.dnsName: {name} is outside every served zone"),
                );
                failed = true;
                continue;
            }
            if name_to_wire(&name).is_ok_and(|w| self.dyn_index.contains_key(&w)) {
                self.err(
                    loc,
                    format!("{f}.dnsName: {name} is already served for a federated record"),
                );
                failed = true;
                continue;
            }
            let rtype = match RecordType::from_str(&ep.record_type.to_ascii_uppercase()) {
                Ok(t) if !matches!(t, RecordType::SOA | RecordType::OPT | RecordType::ANY) => t,
                _ => {
                    self.err(
                        loc,
                        format!(
                            "{f}.recordType: {:?} is not a servable type",
                            ep.record_type
                        ),
                    );
                    failed = true;
                    continue;
                }
            };
            // Two objects defining one name and type would merge their targets silently (or,
            // for a CNAME, break RFC 1034); the first keeps it.
            if let Some(other) = self.endpoint_owners.get(&(name.clone(), rtype)) {
                let other = other.clone();
                self.err(
                    loc,
                    format!("{f}: {name} {rtype} is already defined by {other}"),
                );
                failed = true;
                continue;
            }
            defined.push((name.clone(), rtype));
            if ep.targets.is_empty() {
                self.err(loc, format!("{f}.targets: empty"));
                failed = true;
                continue;
            }
            let ttl = ep
                .record_ttl
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_ENDPOINT_TTL);
            for (j, t) in ep.targets.iter().enumerate() {
                // external-dns writes names without the final dot; make them absolute.
                let text = match rtype {
                    RecordType::CNAME | RecordType::NS | RecordType::PTR if !t.ends_with('.') => {
                        format!("{t}.")
                    }
                    RecordType::TXT if !t.starts_with('"') => {
                        format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                    _ => t.clone(),
                };
                match RData::try_from_str(rtype, &text) {
                    Ok(rd) => out.push(Record::from_rdata(name.clone(), ttl, rd)),
                    Err(err) => {
                        self.err(loc, format!("{f}.targets[{j}]: {t:?}: {err}"));
                        failed = true;
                    }
                }
            }
        }
        if failed {
            return;
        }
        let origin: Arc<str> = Arc::from(loc);
        for key in defined {
            self.endpoint_owners.insert(key, origin.clone());
        }
        self.note_cnames(&out, &origin);
        self.cat.records.extend(out);
    }

    fn note_cnames(&mut self, records: &[Record], origin: &Arc<str>) {
        for r in records {
            if r.record_type() == RecordType::CNAME {
                self.cname_origins
                    .entry(r.name.to_lowercase())
                    .or_insert_with(|| origin.clone());
            }
        }
    }

    /// Static CNAMEs whose chain comes back to itself (across zone files, DNSEndpoints and
    /// `dnsPrefix` aliases): resolvers would get a chain cut at our limit, so each loop is an
    /// error and its records are left out.
    fn check_cname_loops(&mut self) {
        let mut next: HashMap<Name, Name> = HashMap::new();
        for r in &self.cat.records {
            if let RData::CNAME(CNAME(t)) = &r.data {
                next.insert(r.name.to_lowercase(), t.to_lowercase());
            }
        }
        // 1: on the current walk, 2: known to end or already reported.
        let mut state: HashMap<&Name, u8> = HashMap::new();
        let mut starts: Vec<&Name> = next.keys().collect();
        starts.sort();
        let mut loops: Vec<Vec<Name>> = Vec::new();
        for start in starts {
            let mut walk: Vec<&Name> = Vec::new();
            let mut cur = start;
            loop {
                match state.get(cur) {
                    Some(2) => break,
                    Some(_) => {
                        let from = walk.iter().position(|n| *n == cur).unwrap_or(0);
                        loops.push(walk[from..].iter().map(|n| (*n).clone()).collect());
                        break;
                    }
                    None => {}
                }
                state.insert(cur, 1);
                walk.push(cur);
                match next.get(cur) {
                    Some(t) if next.contains_key(t) => cur = t,
                    _ => break,
                }
            }
            for n in walk {
                state.insert(n, 2);
            }
        }
        let mut dropped: HashSet<Name> = HashSet::new();
        for cycle in loops {
            let describe = |n: &Name| match self.cname_origins.get(n) {
                Some(o) => format!("{n} ({o})"),
                None => n.to_string(),
            };
            let mut chain: Vec<String> = cycle.iter().map(describe).collect();
            chain.push(cycle[0].to_string());
            let location = self
                .cname_origins
                .get(&cycle[0])
                .map_or_else(|| "records".to_string(), |o| o.to_string());
            self.err(&location, format!("CNAME loop: {}", chain.join(" -> ")));
            dropped.extend(cycle);
        }
        if !dropped.is_empty() {
            self.cat
                .records
                .retain(|r| !(r.record_type() == RecordType::CNAME && dropped.contains(&r.name)));
        }
    }

    /// RFC 1034: a CNAME owner holds no other data (nor a second CNAME); dynamic names hold
    /// none either.
    fn check_static_conflicts(&mut self) {
        // (CNAME targets, other data) per name.
        let mut by_name: HashMap<&Name, (Vec<&Name>, bool)> = HashMap::new();
        for r in &self.cat.records {
            let e = by_name.entry(&r.name).or_default();
            match &r.data {
                RData::CNAME(CNAME(t)) => {
                    if !e.0.contains(&t) {
                        e.0.push(t);
                    }
                }
                _ => e.1 = true,
            }
        }
        let mut bad: Vec<(Name, &'static str)> = by_name
            .into_iter()
            .filter_map(|(n, (cnames, other))| {
                if cnames.len() > 1 {
                    Some((n.clone(), "more than one CNAME"))
                } else if !cnames.is_empty()
                    && (other
                        || self
                            .zone_of(n)
                            .is_some_and(|z| self.cat.zones[z].apex == *n))
                {
                    Some((n.clone(), "a CNAME cannot sit beside other data"))
                } else {
                    None
                }
            })
            .collect();
        bad.sort();
        for (n, why) in bad {
            self.err("records", format!("{n}: {why}"));
            self.cat.records.retain(|r| r.name != n);
        }
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

    fn meta(name: &str, ns: &str, ann: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: (!ann.is_empty()).then(|| {
                ann.iter()
                    .map(|(k, v)| (format!("meridian.io/{k}"), v.to_string()))
                    .collect()
            }),
            ..Default::default()
        }
    }

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
    fn options_from_annotations() {
        let m = meta(
            "x",
            "y",
            &[
                ("policy", "weighted"),
                ("weights", "a=3, b=1"),
                ("all-down", "servfail"),
                ("probe", "tcp"),
                ("probe-port", "8443"),
                ("fall", "5"),
                ("probe-interval", "500ms"),
            ],
        );
        let o = record_options(&m, &HealthDefaults::default()).expect("valid");
        assert_eq!(o.policy, Policy::Weighted);
        assert_eq!(o.weights.get("a"), Some(&3));
        assert_eq!(o.all_down, AllDown::Servfail);
        assert_eq!(o.probe.kind, ProbeKind::Tcp);
        assert_eq!(o.probe.port, 8443);
        assert_eq!(o.probe.fall, 5);
        assert_eq!(o.probe.rise, 2);
        assert_eq!(o.probe.interval, Duration::from_millis(500));
        let m = meta("x", "y", &[("probe-port", "0")]);
        assert!(
            record_options(&m, &HealthDefaults::default())
                .unwrap_err()
                .starts_with("metadata.annotations[\"meridian.io/probe-port\"]")
        );
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

    /// Issue 12: a typo in a `meridian.io/` annotation made the behaviour vanish; the record is
    /// invalid now, from files and from the API server alike.
    #[test]
    fn unknown_annotations_are_errors() {
        let m = meta("x", "y", &[("probe-pth", "/healthz")]);
        let e = record_options(&m, &HealthDefaults::default()).unwrap_err();
        assert!(
            e.starts_with("metadata.annotations[\"meridian.io/probe-pth\"]: unknown annotation"),
            "{e}"
        );
        assert!(e.contains("meridian.io/probe-path"), "{e}");
        let m = meta(
            "x",
            "y",
            &[
                ("probe-interval", "99999999999999999999h"),
                ("probe-pth", "/"),
            ],
        );
        let all = annotation_errors("ServiceDNSRecord", &m);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].1.contains("invalid duration"), "{all:?}");
        assert!(all[1].1.contains("unknown annotation"), "{all:?}");
        let m = meta("x", "y", &[("probe-interval", "2h")]);
        assert!(
            record_options(&m, &HealthDefaults::default())
                .unwrap_err()
                .contains("longer than the maximum 1h")
        );
        let m = meta("c", "", &[("location", "1,2"), ("policy", "geo")]);
        let all = annotation_errors("KubeFedCluster", &m);
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].0, "meridian.io/policy");
    }
}
