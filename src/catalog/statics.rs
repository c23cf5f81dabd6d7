//! Static records: DNSEndpoints (external-dns' CRD) and the checks that span every static record
//! (a CNAME beside other data, CNAME loops across zone files, DNSEndpoints and `dnsPrefix`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::names::{lower_fqdn, name_to_wire};
use super::{Builder, kubefed};
use crate::model;

/// external-dns' default TTL for endpoints without `recordTTL`.
pub const DEFAULT_ENDPOINT_TTL: u32 = 300;

impl Builder {
    pub(super) fn add_endpoint(&mut self, loc: &str, e: &model::DNSEndpoint) {
        // DNSEndpoints that meridian itself derives from records (KubeFed's `service-<name>`)
        // repeat what the record already serves.
        let derived = e
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(kubefed::is_record_owner);
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
                self.conflicts = true;
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

    pub(super) fn note_cnames(&mut self, records: &[Record], origin: &Arc<str>) {
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
    pub(super) fn check_cname_loops(&mut self) {
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
    pub(super) fn check_static_conflicts(&mut self) {
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
