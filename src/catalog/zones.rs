//! Zones: zone files, and the zones Domains synthesise (SOA and NS at the apex) unless a zone
//! file already covers them.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::Builder;
use super::names::{WireName, apex_wire, lower_fqdn};
use crate::model;
use crate::source::file::ZoneFile;

#[derive(Clone, Debug)]
pub struct Zone {
    pub apex: Name,
    pub soa: Record,
    pub ns: Vec<Record>,
    /// File or object that defined the zone.
    pub origin: String,
}

/// Domains by name: (namespace, apex, apex in wire form).
pub(super) type Domains = HashMap<String, Vec<(Option<String>, Name, WireName)>>;

impl Builder {
    pub(super) fn push_zone(&mut self, z: Zone) {
        self.zone_index
            .insert(apex_wire(&z.apex), self.cat.zones.len() as u32);
        self.cat.zones.push(z);
    }

    pub(super) fn add_zone_file(&mut self, zf: &ZoneFile) {
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
    pub(super) fn add_domain(&mut self, loc: &str, d: &model::Domain) -> Option<Name> {
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
}
