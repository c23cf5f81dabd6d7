//! Incremental compile: after a full build the publisher keeps the catalog's indexes
//! ([`Patcher`]), the endpoint ids and the compiled tables, and redoes only the records an
//! update names. Each update copies the chunks and shards of the tables it touches and shares
//! the rest with the snapshot being served (`catalog::shared`), so one changed record at 100k
//! records costs a few milliseconds instead of a full build.
//!
//! Endpoint ids of unchanged endpoints stay as they are; an id no name uses any more is given
//! to the next new endpoint (its key changes), and until then stays in `Compiled::endpoints`.
//! Anything the patcher cannot redo alone (see [`Patcher::can_redo`]) returns [`Redo::Whole`]:
//! the caller builds everything again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use smallvec::SmallVec;

use super::compile::{self, Compiled, Endpoints, Node};
use crate::catalog::names::{NameMap, WireName};
use crate::catalog::{self, Patcher};
use crate::model::Object;
use crate::source::{Located, SourceError};

/// One object's change: its version before and after (None: absent).
pub struct ObjectChange {
    pub old: Option<Located<Object>>,
    pub new: Option<Located<Object>>,
}

/// Why an update is not applied incrementally.
#[derive(Debug)]
pub enum Redo {
    /// It needs a full build.
    Whole,
}

pub struct Engine {
    patcher: Patcher,
    current: Arc<Compiled>,
    ep: Endpoints,
    /// The catalog's errors, by object location where they have one.
    errors: Vec<SourceError>,
    /// Built at the first update (a pass over every name), kept after.
    index: Option<Index>,
}

struct Index {
    /// Each record's dynamic names.
    by_object: HashMap<Arc<str>, SmallVec<[WireName; 8]>>,
    /// Names below each name that has any, to know when an empty non-terminal goes.
    children: NameMap<u32>,
    /// Uses of each endpoint id by the names' addresses.
    refs: Vec<u32>,
}

/// The parent of a wire name (None for the root).
fn parent(name: &[u8]) -> Option<&[u8]> {
    let l = *name.first()? as usize;
    (l > 0).then(|| &name[l + 1..])
}

fn endpoint_ids(d: &compile::CDyn) -> impl Iterator<Item = u32> + '_ {
    d.targets.iter().flat_map(|t| {
        t.v4.iter()
            .map(|a| a.endpoint)
            .chain(t.v6.iter().map(|a| a.endpoint))
    })
}

impl Engine {
    /// A full build and compile, kept for later updates.
    pub fn build<'o, I>(
        zone_files: &[&crate::source::file::ZoneFile],
        objects: impl Fn() -> I,
        unready: &HashSet<(String, String)>,
        settings: &crate::config::Settings,
    ) -> (Vec<SourceError>, Result<Engine, compile::CompileError>)
    where
        I: Iterator<Item = &'o Located<Object>>,
    {
        let (cat, errors, mut patcher) =
            catalog::build_patchable(zone_files, objects, unready, settings);
        match compile::compile_keeping(cat, settings.clone()) {
            Ok((c, ep)) => {
                patcher.set_catalog(c.catalog.clone());
                let engine = Engine {
                    patcher,
                    current: Arc::new(c),
                    ep,
                    errors: errors.clone(),
                    index: None,
                };
                (errors, Ok(engine))
            }
            Err(e) => (errors, Err(e)),
        }
    }

    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.current
    }

    pub fn errors(&self) -> &[SourceError] {
        &self.errors
    }

    fn index(&mut self) -> &mut Index {
        let c = &self.current;
        let ep_len = self.ep.list.len();
        self.index.get_or_insert_with(|| {
            let mut by_object: HashMap<Arc<str>, SmallVec<[WireName; 8]>> = HashMap::new();
            for d in &c.catalog.dyn_names {
                by_object
                    .entry(d.object.clone())
                    .or_default()
                    .push(d.name.clone());
            }
            let mut children: NameMap<u32> = NameMap::default();
            for (name, _) in c.nodes.iter() {
                if let Some(p) = parent(name)
                    && c.nodes.contains_key(p)
                {
                    match children.get_mut(p) {
                        Some(n) => *n += 1,
                        None => {
                            children.insert(p.into(), 1);
                        }
                    }
                }
            }
            let mut refs = vec![0u32; ep_len];
            for d in &c.dyns {
                for id in endpoint_ids(d) {
                    refs[id as usize] += 1;
                }
            }
            Index {
                by_object,
                children,
                refs,
            }
        })
    }

    /// Redoes the changed objects; returns the new compiled catalog and the errors of the whole
    /// catalog, or [`Redo::Whole`] when a full build is needed.
    pub fn update(
        &mut self,
        changes: &[ObjectChange],
        unready: &HashSet<(String, String)>,
    ) -> Result<Arc<Compiled>, Redo> {
        for ch in changes {
            for o in ch.old.iter().chain(ch.new.iter()) {
                if !self.patcher.can_redo(&o.value) {
                    return Err(Redo::Whole);
                }
            }
        }
        self.index();
        let mut index = self.index.take().ok_or(Redo::Whole)?;
        let result = self.apply(&mut index, changes, unready);
        self.index = Some(index);
        result
    }

    fn apply(
        &mut self,
        index: &mut Index,
        changes: &[ObjectChange],
        unready: &HashSet<(String, String)>,
    ) -> Result<Arc<Compiled>, Redo> {
        self.patcher.set_unready(unready);
        self.ep.forget_recent();
        let mut c: Compiled = (*self.current).clone();
        // Old names out.
        for ch in changes {
            if let Some(old) = &ch.old {
                self.errors.retain(|e| e.location != old.location);
                let Some(object) = Patcher::object_of(&old.value) else {
                    continue;
                };
                for name in index.by_object.remove(object.as_str()).unwrap_or_default() {
                    if let Some(i) = self.patcher.index_of(&name) {
                        self.remove_dyn(index, &mut c, i, &name);
                    }
                }
            }
        }
        // New names in.
        for ch in changes {
            let Some(new) = &ch.new else {
                continue;
            };
            self.errors.retain(|e| e.location != new.location);
            let Some(object) = Patcher::object_of(&new.value) else {
                continue;
            };
            let first = self.patcher.catalog().dyn_names.len();
            let errors = self
                .patcher
                .add(&new.location, &new.value)
                .ok_or(Redo::Whole)?;
            self.errors.extend(errors);
            let last = self.patcher.catalog().dyn_names.len();
            let mut names: SmallVec<[WireName; 8]> = SmallVec::new();
            for i in first..last {
                let Some(d) = self.patcher.dyn_name_mut(i) else {
                    break;
                };
                let cd = compile::compile_dyn(d, i as u32, &c.clusters, &mut self.ep)
                    .map_err(|_| Redo::Whole)?;
                // Compiled into `cd`; not kept twice (as a full compile leaves it).
                d.targets = Vec::new();
                let (name, zone) = (d.name.clone(), d.zone);
                for id in endpoint_ids(&cd) {
                    if index.refs.len() <= id as usize {
                        index.refs.resize(id as usize + 1, 0);
                    }
                    index.refs[id as usize] += 1;
                }
                c.dyns.push(cd);
                Self::add_node(index, &mut c, &name, zone, i as u32);
                names.push(name);
            }
            if !names.is_empty() {
                index.by_object.insert(object.into(), names);
            }
        }
        // Ids no name uses any more go to the next new endpoints.
        self.ep.free = (0..index.refs.len() as u32)
            .filter(|&id| index.refs[id as usize] == 0)
            .rev()
            .collect();
        if c.endpoints.len() != self.ep.list.len()
            || c.endpoints
                .iter()
                .zip(&self.ep.list)
                .any(|(a, b)| a.addr != b.addr || !Arc::ptr_eq(&a.probe, &b.probe))
        {
            c.endpoints = self.ep.list.clone();
            // New ids or keys: the health scheduler's set follows (a new generation, which the
            // ledger maps the old one's states onto). Unchanged endpoints keep the served set.
            c.probes = crate::health::probed::ProbeSet::build(&c.endpoints, &c.dyns, &c.clusters);
        }
        c.catalog = self.patcher.catalog().clone();
        let c = Arc::new(c);
        self.current = c.clone();
        Ok(c)
    }

    /// Removes dynamic name `i` (`name`): the last name moves into its place, in the catalog,
    /// the compiled names and the name table.
    fn remove_dyn(&mut self, index: &mut Index, c: &mut Compiled, i: usize, name: &[u8]) {
        if let Some(d) = c.dyns.swap_remove(i) {
            for id in endpoint_ids(&d) {
                if let Some(r) = index.refs.get_mut(id as usize) {
                    *r = r.saturating_sub(1);
                }
            }
        }
        self.patcher.swap_remove(i);
        if let Some(moved) = c.dyns.get_mut(i) {
            moved.source = i as u32;
            if let Some(d) = self.patcher.catalog().dyn_names.get(i)
                && let Some(node) = c.nodes.get_mut(&d.name)
            {
                node.dynamic = Some(i as u32);
            }
        }
        Self::remove_node(index, c, name);
    }

    /// Takes the dynamic part of a node away; the node goes too when nothing else is left on
    /// it or below it, and so do parents left empty.
    fn remove_node(index: &mut Index, c: &mut Compiled, name: &[u8]) {
        let mut cur: Vec<u8> = name.to_vec();
        let mut first = true;
        loop {
            let Some(node) = c.nodes.get(&cur) else {
                return;
            };
            let apex = c
                .zones
                .get(node.zone as usize)
                .is_some_and(|z| *z.apex == *cur);
            let data = !node.rrsets.is_empty() || node.cname.is_some() || node.delegation;
            let has_children = index.children.get(cur.as_slice()).is_some_and(|n| *n > 0);
            if first {
                if let Some(n) = c.nodes.get_mut(&cur) {
                    n.dynamic = None;
                }
                first = false;
            } else if node.dynamic.is_some() {
                return;
            }
            if data || has_children || apex {
                return;
            }
            c.nodes.remove(&cur);
            let Some(p) = parent(&cur).map(<[u8]>::to_vec) else {
                return;
            };
            if let Some(n) = index.children.get_mut(p.as_slice()) {
                *n = n.saturating_sub(1);
            }
            cur = p;
        }
    }

    /// Puts dynamic name `name` (index `i`) in the table, with the empty non-terminals above
    /// it that are missing.
    fn add_node(index: &mut Index, c: &mut Compiled, name: &WireName, zone: u32, i: u32) {
        if let Some(n) = c.nodes.get_mut(name) {
            n.dynamic = Some(i);
            return;
        }
        c.nodes.insert(
            name.clone(),
            Node {
                zone,
                dynamic: Some(i),
                ..Default::default()
            },
        );
        let apex_len = c.zones.get(zone as usize).map_or(0, |z| z.apex.len());
        let mut cur: &[u8] = name;
        while cur.len() > apex_len {
            let Some(p) = parent(cur) else {
                break;
            };
            match index.children.get_mut(p) {
                Some(n) => *n += 1,
                None => {
                    index.children.insert(p.into(), 1);
                }
            }
            if c.nodes.contains_key(p) {
                break;
            }
            c.nodes.insert(
                p.into(),
                Node {
                    zone,
                    ..Default::default()
                },
            );
            cur = p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// The address an endpoint id stands for.
    fn addr_of(c: &Compiled, id: u32) -> Option<IpAddr> {
        c.endpoints.get(id as usize).map(|k| k.addr)
    }
    use crate::config::Settings;
    use crate::model::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn located(o: Object) -> Located<Object> {
        Located {
            location: format!("test ({})", o.display_name()),
            value: o,
        }
    }

    fn meta(name: &str, ns: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        }
    }

    fn record(name: &str, ns: &str, ips: &[(&str, &str)]) -> Object {
        Object::ServiceDNSRecord(ServiceDNSRecord {
            metadata: meta(name, ns),
            spec: ServiceDNSRecordSpec {
                domain_ref: "fed".into(),
                ..Default::default()
            },
            status: Some(ServiceDNSRecordStatus {
                domain: None,
                dns: ips
                    .iter()
                    .map(|(c, ip)| ClusterDNS {
                        cluster: c.to_string(),
                        region: Some(format!("r-{c}")),
                        zones: vec![format!("z-{c}")],
                        load_balancer: LoadBalancerStatus {
                            ingress: vec![LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                hostname: None,
                            }],
                        },
                    })
                    .collect(),
            }),
        })
    }

    fn base() -> Vec<Located<Object>> {
        let mut v = vec![located(Object::Domain(Domain {
            metadata: meta("fed", "kube-federation-system"),
            domain: "gslb.example.com".into(),
            name_server: None,
        }))];
        for c in ["a", "b"] {
            v.push(located(Object::KubeFedCluster(KubeFedCluster {
                metadata: meta(c, "kube-federation-system"),
                spec: Default::default(),
                status: Some(KubeFedClusterStatus {
                    region: Some(format!("r-{c}")),
                    zones: vec![format!("z-{c}")],
                }),
            })));
        }
        v
    }

    /// What answers see: every name with its data, dynamic targets' addresses by cluster.
    fn view(c: &Compiled) -> Vec<String> {
        let mut out: Vec<String> = c
            .nodes
            .iter()
            .map(|(k, n)| {
                let dynamic = n.dynamic.map(|i| {
                    let d = &c.dyns[i as usize];
                    assert_eq!(d.source, i);
                    assert_eq!(*c.catalog.dyn_names[i as usize].name, **k);
                    d.targets
                        .iter()
                        .map(|t| {
                            let ips: Vec<String> =
                                t.v4.iter()
                                    .map(|a| {
                                        assert_eq!(addr_of(c, a.endpoint), Some(IpAddr::V4(a.ip)));
                                        a.ip.to_string()
                                    })
                                    .collect();
                            format!("{}={}", c.clusters[t.cluster as usize].name, ips.join(","))
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                format!(
                    "{} rrsets={} {}",
                    catalog::wire_to_name(k),
                    n.rrsets.len(),
                    dynamic.unwrap_or_default()
                )
            })
            .collect();
        out.sort();
        out
    }

    fn full(objects: &[Located<Object>]) -> Engine {
        let (errors, engine) = Engine::build(
            &[],
            || objects.iter(),
            &HashSet::new(),
            &Settings::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        engine.expect("compiles")
    }

    #[test]
    fn an_update_gives_what_a_full_build_gives_and_keeps_endpoint_ids() {
        let mut objects = base();
        objects.push(located(record(
            "web",
            "shop",
            &[("a", "192.0.2.1"), ("b", "192.0.2.2")],
        )));
        objects.push(located(record("api", "shop", &[("a", "192.0.2.3")])));
        objects.push(located(record("db", "data", &[("b", "192.0.2.4")])));
        let mut engine = full(&objects);
        let served = engine.compiled().clone();
        let id_of = |c: &Compiled, ip: &str| {
            c.endpoints
                .iter()
                .position(|k| k.addr.to_string() == ip)
                .expect("endpoint")
        };
        let kept = id_of(&served, "192.0.2.1");
        // web moves b's address; db goes; cache arrives.
        let web = located(record(
            "web",
            "shop",
            &[("a", "192.0.2.1"), ("b", "192.0.2.9")],
        ));
        let cache = located(record("cache", "data", &[("a", "192.0.2.5")]));
        let changes = vec![
            ObjectChange {
                old: Some(objects[3].clone()),
                new: Some(web.clone()),
            },
            ObjectChange {
                old: Some(objects[5].clone()),
                new: None,
            },
            ObjectChange {
                old: None,
                new: Some(cache.clone()),
            },
        ];
        let patched = engine.update(&changes, &HashSet::new()).expect("patched");
        let mut after = base();
        after.extend([web, objects[4].clone(), cache]);
        let rebuilt = full(&after);
        assert_eq!(view(&patched), view(rebuilt.compiled()));
        assert_eq!(
            id_of(&patched, "192.0.2.1"),
            kept,
            "an unchanged endpoint keeps its id"
        );
        // The served snapshot is untouched: its names are still there.
        assert!(
            view(&served)
                .iter()
                .any(|l| l.starts_with("db.data.fed.svc"))
        );
        // A record that is now invalid is reported and left out; fixed, it is back.
        let mut bad = record("api", "shop", &[("a", "192.0.2.300")]);
        if let Object::ServiceDNSRecord(r) = &mut bad {
            r.spec.record_ttl = Some(5);
        }
        let bad = located(bad);
        engine
            .update(
                &[ObjectChange {
                    old: Some(objects[4].clone()),
                    new: Some(bad.clone()),
                }],
                &HashSet::new(),
            )
            .expect("patched");
        assert_eq!(engine.errors().len(), 1);
        assert!(engine.errors()[0].to_string().contains("status.dns[0]"));
        let c = engine
            .update(
                &[ObjectChange {
                    old: Some(bad),
                    new: Some(objects[4].clone()),
                }],
                &HashSet::new(),
            )
            .expect("patched");
        assert!(engine.errors().is_empty());
        let mut again = base();
        again.extend([after[3].clone(), after[5].clone(), objects[4].clone()]);
        assert_eq!(view(&c), view(full(&again).compiled()));
    }

    #[test]
    fn a_readiness_change_is_redone() {
        let mut objects = base();
        objects.push(located(record(
            "web",
            "shop",
            &[("a", "192.0.2.1"), ("b", "192.0.2.2")],
        )));
        let mut engine = full(&objects);
        let unready = HashSet::from([("ServiceDNSRecord shop/web".to_string(), "a".to_string())]);
        let same = ObjectChange {
            old: Some(objects[3].clone()),
            new: Some(objects[3].clone()),
        };
        let c = engine.update(&[same], &unready).expect("patched");
        let key = catalog::name_to_wire(
            &hickory_proto::rr::Name::from_ascii("web.shop.fed.svc.gslb.example.com.")
                .expect("name"),
        )
        .expect("wire");
        let global = c.nodes.get(&key).and_then(|n| n.dynamic).expect("dynamic");
        let ready: Vec<(String, bool)> = c.dyns[global as usize]
            .targets
            .iter()
            .map(|t| (c.clusters[t.cluster as usize].name.clone(), t.ready))
            .collect();
        assert_eq!(ready, [("a".to_string(), false), ("b".to_string(), true)]);
    }

    #[test]
    fn what_a_record_cannot_redo_alone_needs_a_full_build() {
        let mut objects = base();
        objects.push(located(record("web", "shop", &[("a", "192.0.2.1")])));
        let mut engine = full(&objects);
        let unregistered = located(record("web", "shop", &[("zz", "192.0.2.1")]));
        let r = engine.update(
            &[ObjectChange {
                old: Some(objects[3].clone()),
                new: Some(unregistered),
            }],
            &HashSet::new(),
        );
        assert!(matches!(r, Err(Redo::Whole)));
    }
}
