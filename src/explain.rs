//! "Why did this address get this answer?" — the client's location, the name's candidates with
//! distance and health, the decision, and the DNS answer itself, computed by the same code that
//! answers queries.

use std::fmt::Write as _;
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};

use crate::catalog::{NameScope, name_to_wire};
use crate::dns::answer::{self, Transport};
use crate::geo::LocationKind;
use crate::model::Policy;
use crate::routing::{self, Candidate, Decision, Family, Reason, Selection};
use crate::snapshot::Snapshot;

#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    pub name: String,
    pub qtype: String,
    pub client: String,
    pub location: ClientLocation,
    pub zone: Option<String>,
    pub record: Option<RecordInfo>,
    pub candidates: Vec<Candidate>,
    pub decision: String,
    pub rcode: String,
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    pub generation: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClientLocation {
    pub place: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub kind: Option<LocationKind>,
    pub network_prefix: Option<u8>,
    pub database: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecordInfo {
    pub object: String,
    pub scope: NameScope,
    pub policy: String,
    pub all_down: String,
    pub ttl: u32,
    pub fallback: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("invalid name {0:?}: {1}")]
    Name(String, String),
    #[error("unsupported query type {0:?}")]
    Type(String),
}

pub fn explain(
    snap: &Snapshot,
    name: &str,
    qtype: &str,
    client: IpAddr,
) -> Result<Explanation, ExplainError> {
    let mut qname =
        Name::from_ascii(name).map_err(|e| ExplainError::Name(name.into(), e.to_string()))?;
    qname.set_fqdn(true);
    let rtype: RecordType = qtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| ExplainError::Type(qtype.into()))?;
    let c = &snap.compiled;
    let geo = snap.geo.as_ref().map(|db| (db, db.lookup(client)));
    let location = ClientLocation {
        place: snap.geo.as_ref().and_then(|db| db.describe(client)),
        lat: geo.and_then(|(_, g)| g.point.map(|p| p.lat)),
        lon: geo.and_then(|(_, g)| g.point.map(|p| p.lon)),
        kind: geo.and_then(|(_, g)| g.kind),
        network_prefix: geo.map(|(_, g)| g.prefix_len),
        database: snap
            .geo
            .as_ref()
            .map(|db| format!("{} ({})", db.path().display(), db.database_type())),
    };
    let key = name_to_wire(&qname).map_err(|e| ExplainError::Name(name.into(), e))?;
    let zone = c
        .find_zone(&key)
        .map(|z| c.zones[z as usize].name.to_string());
    let fam = if rtype == RecordType::AAAA {
        Family::V6
    } else {
        Family::V4
    };
    let position = geo.and_then(|(_, g)| g.point.map(|p| p.unit()));
    let default_client = c
        .default_cluster
        .and_then(|i| c.clusters.get(i as usize))
        .and_then(|cl| cl.unit);
    let (record, candidates, decision) = match c.nodes.get(&key).and_then(|n| n.dynamic) {
        Some(di) => {
            let d = &c.dyns[di as usize];
            let src = &c.catalog.dyn_names[d.source as usize];
            let cx = routing::Ctx {
                d,
                fam,
                clusters: &c.clusters,
                health: &snap.health,
                client: position,
                default_client,
                rand: 0,
            };
            let cands = routing::candidates(&cx);
            let out = routing::select(&cx);
            let fallback = src
                .fallback
                .as_deref()
                .map(|f| crate::catalog::wire_to_name(f).to_string());
            let cluster_of = |t: u32| {
                c.clusters[d.targets[t as usize].cluster as usize]
                    .name
                    .as_str()
            };
            let mut decision = describe(&out, d.policy, cluster_of, fallback.as_deref());
            if position.is_none() && default_client.is_some() && d.policy.needs_location() {
                decision.push_str(" (client unplaced: distances from the default cluster)");
            }
            (
                Some(RecordInfo {
                    object: src.object.to_string(),
                    scope: src.scope.clone(),
                    policy: d.policy.as_str().into(),
                    all_down: d.all_down.as_str().into(),
                    ttl: answer::dynamic_ttl(d, c.settings.max_dynamic_ttl, out.degraded),
                    fallback,
                }),
                cands,
                decision,
            )
        }
        None if zone.is_none() => (None, vec![], "not in a served zone: REFUSED".into()),
        None if c.nodes.contains_key(&key) => (None, vec![], "static data".into()),
        None => (None, vec![], "no such name".into()),
    };
    // The real answer, from the query path itself.
    let mut msg = Message::new(0x4d45, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(qname.clone(), rtype));
    let packet = msg
        .to_vec()
        .map_err(|e| ExplainError::Name(name.into(), e.to_string()))?;
    let mut out = Vec::new();
    let (rcode, answers, authority) =
        match answer::respond(snap, &packet, client, Transport::Tcp, 0, &mut out) {
            Some(_) => match Message::from_vec(&out) {
                Ok(m) => (
                    m.metadata.response_code.to_string(),
                    m.answers.iter().map(|r| r.to_string()).collect(),
                    m.authorities.iter().map(|r| r.to_string()).collect(),
                ),
                Err(e) => (format!("undecodable answer: {e}"), vec![], vec![]),
            },
            None => ("dropped".into(), vec![], vec![]),
        };
    Ok(Explanation {
        name: qname.to_string(),
        qtype: rtype.to_string(),
        client: client.to_string(),
        location,
        zone,
        record,
        candidates,
        decision,
        rcode,
        answers,
        authority,
        generation: snap.generation,
    })
}

/// The decision in words, from the reason routing gave (nothing re-derived here).
fn describe<'a>(
    out: &Decision,
    policy: Policy,
    cluster_of: impl Fn(u32) -> &'a str,
    fallback: Option<&str>,
) -> String {
    let mut s = match (out.selection, out.reason) {
        (Selection::One { target, .. }, Reason::AllDown { policy: p, .. }) => format!(
            "{} although down: every cluster is down, all-down policy \"{}\"",
            cluster_of(target),
            p.as_str()
        ),
        (Selection::One { target, .. }, _) => format!("{} ({policy} policy)", cluster_of(target)),
        (_, Reason::EveryHealthy) => "every healthy cluster (policy all)".into(),
        (_, Reason::Unplaced) => "every healthy cluster: the client's location is unknown and no defaultCluster is configured".into(),
        (Selection::AllHealthy, _) => "every healthy cluster".into(),
        (Selection::AllTargets { .. }, _) => {
            "every cluster: all are down, all-down policy \"all\"".into()
        }
        (Selection::Fallback, _) => format!(
            "no healthy cluster here: CNAME to {}",
            fallback.unwrap_or_default()
        ),
        (Selection::Empty, Reason::AllDown { .. }) => {
            "no addresses: every cluster is down, all-down policy \"empty\"".into()
        }
        (Selection::Empty, _) => "no cluster has an address of this family".into(),
        (Selection::Servfail, _) => {
            "SERVFAIL: every cluster is down, all-down policy \"servfail\"".into()
        }
    };
    match out.reason {
        Reason::FailedOver { from, why } => {
            let _ = write!(
                s,
                "; nearest cluster {} is {}",
                cluster_of(from),
                why.as_str()
            );
        }
        Reason::AllDown {
            passed: Some(from), ..
        } => {
            let _ = write!(s, "; nearest cluster {} is drained", cluster_of(from));
        }
        _ => {}
    }
    s
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "query:     {} {} from {}",
            self.name, self.qtype, self.client
        )?;
        let l = &self.location;
        match (l.lat, l.lon) {
            (Some(lat), Some(lon)) => writeln!(
                f,
                "client:    {} at {lat:.4},{lon:.4} ({}; GeoIP network /{})",
                l.place.as_deref().unwrap_or("unnamed place"),
                match l.kind {
                    Some(LocationKind::CountryCentroid) => "country centroid",
                    _ => "coordinates",
                },
                l.network_prefix.unwrap_or(0)
            )?,
            _ => writeln!(
                f,
                "client:    not in the GeoIP database{}",
                if l.database.is_none() {
                    " (no database loaded)"
                } else {
                    ""
                }
            )?,
        }
        writeln!(f, "zone:      {}", self.zone.as_deref().unwrap_or("(none)"))?;
        if let Some(r) = &self.record {
            let scope = match &r.scope {
                NameScope::Global => "global".to_string(),
                NameScope::Region(x) => format!("region {x}"),
                NameScope::Zone(x) => format!("zone {x}"),
            };
            writeln!(
                f,
                "record:    {} ({scope} name), policy {}, all-down {}, TTL {}",
                r.object, r.policy, r.all_down, r.ttl
            )?;
            if !self.candidates.is_empty() {
                writeln!(f, "clusters:")?;
                for c in &self.candidates {
                    let dist = c
                        .distance_km
                        .map(|d| format!("{d:>8.0} km"))
                        .unwrap_or_else(|| "  unlocated".into());
                    let state = if c.drained {
                        "drained"
                    } else if !c.eligible {
                        "no address of this family"
                    } else if c.healthy {
                        "healthy"
                    } else {
                        "down"
                    };
                    writeln!(f, "  {:<24} {dist}  {state}", c.cluster)?;
                }
            }
        }
        writeln!(f, "decision:  {}", self.decision)?;
        writeln!(f, "answer:    {}", self.rcode)?;
        for a in &self.answers {
            writeln!(f, "  {a}")?;
        }
        for a in &self.authority {
            writeln!(f, "  (authority) {a}")?;
        }
        Ok(())
    }
}
