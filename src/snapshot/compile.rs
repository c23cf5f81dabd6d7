//! Catalog → query-ready tables. All the work a query would otherwise repeat is done here once:
//! names become lowercased wire-format keys, record data is pre-encoded, clusters get unit
//! vectors for distance ordering, and every probed address gets an endpoint id for the health
//! vector.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use smallvec::SmallVec;
use thiserror::Error;

use crate::catalog::names::{NameHasher, WireName, ZoneIndex, name_to_wire};
use crate::catalog::shared::{ChunkVec, NameTable};
use crate::catalog::{Catalog, DynName, ProbeKind, ProbeSpec, RecordOptions};
use crate::config::Settings;
use crate::model::{AllDown, Policy};

#[derive(Debug, Error)]
#[error("cannot encode {what}: {message}")]
pub struct CompileError {
    pub what: String,
    pub message: String,
}

/// Lowercased wire form of a name, as a compile error when it has no wire form.
pub(crate) fn wire_name(name: &Name) -> Result<WireName, CompileError> {
    name_to_wire(name).map_err(|message| CompileError {
        what: name.to_string(),
        message,
    })
}

fn rdata_bytes(owner: &Name, rd: &RData) -> Result<Box<[u8]>, CompileError> {
    let mut buf = Vec::with_capacity(32);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    rd.emit(&mut enc).map_err(|e| CompileError {
        what: format!("{owner} {}", rd.record_type()),
        message: e.to_string(),
    })?;
    Ok(buf.into_boxed_slice())
}

/// One RRset, record data pre-encoded.
#[derive(Debug, Clone)]
pub struct RRset {
    pub rtype: u16,
    pub ttl: u32,
    pub rdatas: Vec<Box<[u8]>>,
}

/// One name of the table. Kept small: there is one per served name (700k for 100k records).
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub zone: u32,
    pub rrsets: Vec<RRset>,
    /// Index into `Compiled::dyns`.
    pub dynamic: Option<u32>,
    /// Static CNAME target, wire form (lowercased key) and the RRset to write.
    pub cname: Option<Box<(WireName, RRset)>>,
    /// NS records below the apex: a zone cut.
    pub delegation: bool,
}

#[derive(Debug, Clone)]
pub struct CZone {
    pub apex: WireName,
    pub name: Name,
    pub soa: RRset,
    /// RFC 2308: negative answers carry the SOA with TTL = min(SOA TTL, SOA MINIMUM).
    pub negative_ttl: u32,
    pub has_delegations: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Addr<T> {
    pub ip: T,
    /// Index into the health vector.
    pub endpoint: u32,
}

#[derive(Debug, Clone)]
pub struct CTarget {
    pub cluster: u32,
    pub v4: SmallVec<[Addr<Ipv4Addr>; 1]>,
    pub v6: SmallVec<[Addr<Ipv6Addr>; 1]>,
    /// Load-balancer hostname (wire form), used when the cluster has no address.
    pub hostname: Option<WireName>,
    pub weight: u32,
    /// Kubernetes readiness: false when the cluster has no ready endpoints for this record,
    /// which makes the target unhealthy whatever its probes say.
    pub ready: bool,
}

#[derive(Debug, Clone)]
pub struct CDyn {
    pub ttl: u32,
    pub policy: Policy,
    pub all_down: AllDown,
    /// Inline for one target: region and zone names have one per cluster there.
    pub targets: SmallVec<[CTarget; 1]>,
    /// Target indices in failover order (the annotation's order, then the rest).
    pub failover: SmallVec<[u32; 4]>,
    /// CNAME target (wire form) when no target is healthy.
    pub fallback: Option<WireName>,
    /// Index into `Catalog::dyn_names`: always its own index in `Compiled::dyns` (incremental
    /// updates keep both in step).
    pub source: u32,
    /// The targets' addresses merged, each once (names of more than one target only): a
    /// multi-cluster answer walks this instead of comparing every address with every earlier
    /// target's, which cost O(targets²) per query.
    pub merged: Option<Box<Merged>>,
    /// Shortest probe interval among the targets' probes (0 when none is probed): the time
    /// until the answer could next change, for degraded TTLs.
    pub probe_interval_ms: u64,
}

/// One distinct address of a name, with the targets that carry it.
#[derive(Debug, Clone, Copy)]
pub struct MergedAddr<T> {
    pub ip: T,
    pub endpoint: u32,
    /// Range into `Merged::owners`.
    pub owners: (u32, u32),
}

/// A name's distinct addresses in first-seen target order, for multi-cluster answers.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub v4: Vec<MergedAddr<Ipv4Addr>>,
    pub v6: Vec<MergedAddr<Ipv6Addr>>,
    /// Target indices, grouped per address.
    pub owners: Vec<u32>,
}

impl Merged {
    pub fn owners_of<T>(&self, a: &MergedAddr<T>) -> &[u32] {
        &self.owners[a.owners.0 as usize..a.owners.1 as usize]
    }
}

/// Merges the targets' addresses: one entry per distinct address (its endpoint is the same in
/// every target, one probe serving the whole name), listing the targets that carry it.
fn merge_addresses(targets: &[CTarget]) -> Merged {
    fn merge<T: Copy + Eq + std::hash::Hash>(
        targets: &[CTarget],
        addrs: impl Fn(&CTarget) -> &[Addr<T>],
        owners: &mut Vec<u32>,
    ) -> Vec<MergedAddr<T>> {
        let mut order: Vec<(T, u32)> = Vec::new();
        let mut by_ip: HashMap<T, Vec<u32>, NameHasher> = HashMap::default();
        for (i, t) in targets.iter().enumerate() {
            for a in addrs(t) {
                let list = by_ip.entry(a.ip).or_insert_with(|| {
                    order.push((a.ip, a.endpoint));
                    Vec::new()
                });
                if list.last() != Some(&(i as u32)) {
                    list.push(i as u32);
                }
            }
        }
        order
            .into_iter()
            .map(|(ip, endpoint)| {
                let start = owners.len() as u32;
                owners.extend_from_slice(by_ip.get(&ip).map_or(&[][..], |v| v.as_slice()));
                MergedAddr {
                    ip,
                    endpoint,
                    owners: (start, owners.len() as u32),
                }
            })
            .collect()
    }
    let mut owners = Vec::new();
    let v4 = merge(targets, |t| &t.v4, &mut owners);
    let v6 = merge(targets, |t| &t.v6, &mut owners);
    Merged { v4, v6, owners }
}

#[derive(Debug, Clone)]
pub struct CCluster {
    pub name: String,
    pub unit: Option<[f64; 3]>,
}

/// An address to health-check, shared by every name that uses it with the same probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: IpAddr,
    /// One allocation per distinct probe, shared by every endpoint that uses it.
    pub probe: Arc<ProbeSpec>,
}

impl EndpointKey {
    pub fn probed(&self) -> bool {
        self.probe.kind != ProbeKind::None
    }
}

/// The compiled catalog: immutable, shared by every query. Its big tables share their
/// unchanged chunks with the previous version after an incremental update (`incremental`).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub settings: Settings,
    pub catalog: Catalog,
    pub zones: Vec<CZone>,
    pub zone_index: ZoneIndex,
    pub nodes: NameTable<Node>,
    pub dyns: ChunkVec<CDyn>,
    pub clusters: Vec<CCluster>,
    pub endpoints: Vec<EndpointKey>,
    /// The probed endpoints, for the health scheduler.
    pub probes: crate::health::probed::ProbeSet,
    /// Cluster used to place clients the GeoIP database cannot.
    pub default_cluster: Option<u32>,
}

impl Compiled {
    /// The zone holding a (lowercased, wire-form) name: longest apex that is a suffix.
    #[inline]
    pub fn find_zone(&self, name: &[u8]) -> Option<u32> {
        self.zone_index.find(name)
    }
}

pub fn compile(catalog: Catalog, settings: Settings) -> Result<Compiled, CompileError> {
    compile_keeping(catalog, settings).map(|(c, _)| c)
}

/// As [`compile`], also returning the endpoint ids given, to give ids to later names
/// (`incremental`) consistently.
pub(crate) fn compile_keeping(
    mut catalog: Catalog,
    settings: Settings,
) -> Result<(Compiled, Endpoints), CompileError> {
    let mut zones = Vec::with_capacity(catalog.zones.len());
    let mut zone_index = ZoneIndex::default();
    let mut nodes: NameTable<Node> = NameTable::default();
    nodes.reserve(catalog.records.len() + catalog.dyn_names.len());
    for (i, z) in catalog.zones.iter().enumerate() {
        let apex = wire_name(&z.apex)?;
        let soa_data = rdata_bytes(&z.apex, &z.soa.data)?;
        let minimum = match &z.soa.data {
            RData::SOA(s) => s.minimum,
            _ => z.soa.ttl,
        };
        zones.push(CZone {
            apex: apex.clone(),
            name: z.apex.clone(),
            soa: RRset {
                rtype: u16::from(RecordType::SOA),
                ttl: z.soa.ttl,
                rdatas: vec![soa_data],
            },
            negative_ttl: z.soa.ttl.min(minimum),
            has_delegations: false,
        });
        zone_index.insert(apex.clone(), i as u32);
    }
    // Static records, grouped into RRsets (one TTL per RRset: the smallest, as RFC 2181 §5.2 asks).
    let mut statics: Vec<&Record> = catalog.records.iter().collect();
    for z in &catalog.zones {
        statics.push(&z.soa);
        statics.extend(z.ns.iter());
    }
    for r in statics {
        let key = wire_name(&r.name)?;
        let Some(zone) = zone_index.find(&key) else {
            continue;
        };
        let rtype = u16::from(r.record_type());
        let data = rdata_bytes(&r.name, &r.data)?;
        let node = nodes.entry_or_default(key.clone());
        node.zone = zone;
        if let RData::CNAME(c) = &r.data {
            let target = wire_name(&c.0)?;
            node.cname = Some(Box::new((
                target,
                RRset {
                    rtype,
                    ttl: r.ttl,
                    rdatas: vec![data],
                },
            )));
            continue;
        }
        if r.record_type() == RecordType::NS && *key != *zones[zone as usize].apex {
            node.delegation = true;
            zones[zone as usize].has_delegations = true;
        }
        match node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
            Some(set) => {
                set.ttl = set.ttl.min(r.ttl);
                if !set.rdatas.contains(&data) {
                    set.rdatas.push(data);
                }
            }
            None => node.rrsets.push(RRset {
                rtype,
                ttl: r.ttl,
                rdatas: vec![data],
            }),
        }
    }
    let clusters: Vec<CCluster> = catalog
        .clusters
        .iter()
        .map(|c| CCluster {
            name: c.name.clone(),
            unit: c.location.map(|p| p.unit()),
        })
        .collect();
    let mut ep = Endpoints::default();
    let mut dyns = ChunkVec::default();
    dyns.reserve(catalog.dyn_names.len());
    for i in 0..catalog.dyn_names.len() {
        // Fresh from the build: no chunk is shared, so this copies nothing.
        let Some(d) = catalog.dyn_names.get_mut(i) else {
            break;
        };
        let cd = compile_dyn(d, i as u32, &clusters, &mut ep)?;
        // Compiled into `cd`; not kept twice.
        d.targets = Vec::new();
        let node = nodes.entry_or_default(d.name.clone());
        node.zone = d.zone;
        node.dynamic = Some(dyns.len() as u32);
        dyns.push(cd);
    }
    let endpoints = ep.list.clone();
    // Empty non-terminals exist (NODATA, not NXDOMAIN: RFC 8020). Names share their parents,
    // so each parent is looked up once per child but allocated once.
    let mut missing: Vec<(WireName, u32)> = Vec::new();
    // Parents already looked at: a small table (names share few parents), so most names cost
    // one cache-resident probe instead of one into the big one.
    let mut checked: std::collections::HashSet<&[u8], NameHasher> = Default::default();
    // Walked in the catalog's order, not the table's: the names' bytes were allocated in that
    // order, so the walk reads memory mostly in sequence.
    let statics = nodes
        .iter()
        .filter(|(_, n)| n.dynamic.is_none())
        .map(|(k, n)| (k, n.zone));
    let dynamics = catalog.dyn_names.iter().map(|d| (&d.name, d.zone));
    for (name, zone) in dynamics.chain(statics) {
        let apex_len = zones[zone as usize].apex.len();
        let mut i = 0;
        while name.len() - i > apex_len {
            i += name[i] as usize + 1;
            let parent = &name[i..];
            // Seen: it and its ancestors are handled. In the table: its ancestors are handled
            // when its own entry comes round.
            if !checked.insert(parent) || nodes.contains_key(parent) {
                break;
            }
            missing.push((parent.into(), zone));
        }
    }
    drop(checked);
    for (name, zone) in missing {
        nodes.insert(
            name,
            Node {
                zone,
                ..Default::default()
            },
        );
    }
    let default_cluster = settings
        .default_cluster
        .as_ref()
        .and_then(|n| clusters.iter().position(|c| &c.name == n))
        .map(|i| i as u32);
    let probes = crate::health::probed::ProbeSet::build(&endpoints, &dyns, &clusters);
    Ok((
        Compiled {
            settings,
            catalog,
            zones,
            zone_index,
            nodes,
            dyns,
            clusters,
            endpoints,
            probes,
            default_cluster,
        },
        ep,
    ))
}

/// Endpoint ids: one per (address, probe), probes interned.
#[derive(Default)]
pub(crate) struct Endpoints {
    pub(crate) list: Vec<EndpointKey>,
    /// Ids no name uses any more (incremental updates), given to the next new endpoints.
    pub(crate) free: Vec<u32>,
    ids: HashMap<(IpAddr, u32), u32, NameHasher>,
    /// Interned probes by value, and by the address of the options they came from (the names
    /// of one record share one `RecordOptions`, most records a few).
    probes: HashMap<ProbeSpec, u32, NameHasher>,
    by_options: HashMap<usize, u32, NameHasher>,
    specs: Vec<Arc<ProbeSpec>>,
    /// Ids of the current object's addresses: its region and zone names repeat the global
    /// name's, and this spares the big table those lookups.
    object: usize,
    recent: SmallVec<[(IpAddr, u32, u32); 8]>,
}

impl Endpoints {
    pub(crate) fn probe(&mut self, options: &Arc<RecordOptions>) -> u32 {
        // The catalog keeps every options value alive while it compiles: addresses are stable.
        let at = Arc::as_ptr(options) as usize;
        if let Some(&p) = self.by_options.get(&at) {
            return p;
        }
        let p = match self.probes.get(&options.probe) {
            Some(&p) => p,
            None => {
                let p = self.specs.len() as u32;
                self.specs.push(Arc::new(options.probe.clone()));
                self.probes.insert(options.probe.clone(), p);
                p
            }
        };
        self.by_options.insert(at, p);
        p
    }

    /// Forgets the current object's ids: between incremental updates an id may be freed, and
    /// another object's name may be allocated where the last one's was.
    pub(crate) fn forget_recent(&mut self) {
        self.object = 0;
        self.recent.clear();
    }

    fn start_object(&mut self, object: &Arc<str>) {
        let at = Arc::as_ptr(object) as *const u8 as usize;
        if at != self.object {
            self.object = at;
            self.recent.clear();
        }
    }

    fn id(&mut self, addr: IpAddr, probe: u32) -> u32 {
        if let Some(&(_, _, id)) = self
            .recent
            .iter()
            .find(|(a, p, _)| *a == addr && *p == probe)
        {
            return id;
        }
        let id = match self.ids.get(&(addr, probe)) {
            Some(&id) => id,
            None => {
                let key = EndpointKey {
                    addr,
                    probe: self.specs[probe as usize].clone(),
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        // A freed id: the endpoint that had it is forgotten.
                        let old = std::mem::replace(&mut self.list[id as usize], key);
                        if let Some(p) = self.probes.get(&*old.probe) {
                            self.ids.remove(&(old.addr, *p));
                        }
                        id
                    }
                    None => {
                        self.list.push(key);
                        (self.list.len() - 1) as u32
                    }
                };
                self.ids.insert((addr, probe), id);
                id
            }
        };
        if self.recent.len() < self.recent.inline_size() {
            self.recent.push((addr, probe, id));
        }
        id
    }
}

pub(crate) fn compile_dyn(
    d: &DynName,
    source: u32,
    clusters: &[CCluster],
    ep: &mut Endpoints,
) -> Result<CDyn, CompileError> {
    ep.start_object(&d.object);
    let probe = ep.probe(&d.options);
    let mut targets: SmallVec<[CTarget; 1]> = SmallVec::with_capacity(d.targets.len());
    for t in &d.targets {
        let mut v4 = SmallVec::new();
        let mut v6 = SmallVec::new();
        for a in &t.addrs {
            // An address listed twice for one cluster is answered once.
            match a {
                IpAddr::V4(ip) if v4.iter().any(|x: &Addr<Ipv4Addr>| x.ip == *ip) => {}
                IpAddr::V6(ip) if v6.iter().any(|x: &Addr<Ipv6Addr>| x.ip == *ip) => {}
                IpAddr::V4(ip) => v4.push(Addr {
                    ip: *ip,
                    endpoint: ep.id(*a, probe),
                }),
                IpAddr::V6(ip) => v6.push(Addr {
                    ip: *ip,
                    endpoint: ep.id(*a, probe),
                }),
            }
        }
        let hostname = match t.hostnames.first() {
            Some(h) => Some(wire_name(&Name::from_ascii(h).map_err(|e| {
                CompileError {
                    what: h.clone(),
                    message: e.to_string(),
                }
            })?)?),
            None => None,
        };
        let cluster_name = &clusters[t.cluster].name;
        let weight = if d.options.weights.is_empty() {
            1
        } else {
            d.options.weights.get(cluster_name).copied().unwrap_or(0)
        };
        targets.push(CTarget {
            cluster: t.cluster as u32,
            v4,
            v6,
            hostname,
            weight,
            ready: t.ready,
        });
    }
    let mut failover: SmallVec<[u32; 4]> = SmallVec::with_capacity(targets.len());
    for name in &d.options.failover_order {
        for (i, t) in targets.iter().enumerate() {
            if &clusters[t.cluster as usize].name == name && !failover.contains(&(i as u32)) {
                failover.push(i as u32);
            }
        }
    }
    for i in 0..targets.len() as u32 {
        if !failover.contains(&i) {
            failover.push(i);
        }
    }
    let probed = d.options.probe.kind != ProbeKind::None;
    let merged = (targets.len() > 1).then(|| Box::new(merge_addresses(&targets)));
    Ok(CDyn {
        ttl: d.ttl,
        policy: d.options.policy,
        all_down: d.options.all_down,
        targets,
        failover,
        fallback: d.fallback.clone(),
        source,
        merged,
        probe_interval_ms: if probed {
            d.options.probe.interval.as_millis() as u64
        } else {
            0
        },
    })
}
