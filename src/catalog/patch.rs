//! Redoing single records against a built catalog: a record's change (the common case with
//! Kubernetes, where member clusters move a record's addresses) costs that record's names,
//! not a build of every object. What a record's names depend on besides the record — zones,
//! Domains, registered clusters, names other objects hold — is left as the build found it;
//! a change that would touch any of it is refused here ([`Patcher::can_redo`]) and built
//! whole instead, so a patched catalog is the one a full build would give.

use std::collections::HashSet;

use super::kubefed::{self, object_id};
use super::{Catalog, DynName, Patcher};
use crate::config::Settings;
use crate::model::Object;
use crate::source::SourceError;

impl Patcher {
    /// The catalog as patched so far.
    pub fn catalog(&self) -> &Catalog {
        &self.b.cat
    }

    /// Installs the catalog as compiled (its names' targets moved into the compiled tables).
    pub fn set_catalog(&mut self, cat: Catalog) {
        self.b.cat = cat;
    }

    pub fn settings(&self) -> &Settings {
        &self.b.settings
    }

    /// Whether an object (the old or the new version of a changed one) can be redone alone:
    /// ServiceDNSRecords and IngressDNSRecords whose clusters are all registered and that
    /// define no `dnsPrefix` alias (a static record), and DNSEndpoints derived from records
    /// (which add nothing). Never once the build refused an object over a name another one
    /// holds: which one keeps it depends on every object's order.
    pub fn can_redo(&self, o: &Object) -> bool {
        if self.b.conflicts {
            return false;
        }
        let registered = |cluster: &str| {
            self.b
                .cluster_index
                .get(cluster)
                .is_some_and(|&i| i < self.b.registered)
        };
        match o {
            Object::ServiceDNSRecord(r) => {
                r.spec.dns_prefix.as_deref().is_none_or(str::is_empty)
                    && r.status
                        .iter()
                        .flat_map(|s| &s.dns)
                        .all(|e| registered(&e.cluster))
            }
            Object::IngressDNSRecord(r) => r
                .status
                .iter()
                .flat_map(|s| &s.dns)
                .all(|e| registered(&e.cluster)),
            Object::DNSEndpoint(e) => e
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(kubefed::is_record_owner),
            _ => false,
        }
    }

    /// The `Kind ns/name` a record's names carry (`DynName::object`); None for other kinds.
    pub fn object_of(o: &Object) -> Option<String> {
        let kind = match o {
            Object::ServiceDNSRecord(_) => "ServiceDNSRecord",
            Object::IngressDNSRecord(_) => "IngressDNSRecord",
            _ => return None,
        };
        let m = o.metadata();
        Some(object_id(
            kind,
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or(""),
        ))
    }

    /// The index of the dynamic name `name`.
    pub fn index_of(&self, name: &[u8]) -> Option<usize> {
        self.b.dyn_index.get(name).copied()
    }

    /// Removes dynamic name `i`; the last name moves to `i` (its index is updated).
    pub fn swap_remove(&mut self, i: usize) -> Option<DynName> {
        let removed = self.b.cat.dyn_names.swap_remove(i)?;
        self.b.dyn_index.remove(&removed.name);
        if let Some(moved) = self.b.cat.dyn_names.get(i) {
            self.b.dyn_index.insert(moved.name.clone(), i);
        }
        Some(removed)
    }

    /// Derives the names of a record (its new version, at `location`), appended after the
    /// others, and returns its errors (with any, it is left out, as a build leaves it). None
    /// when it clashed with a name another object holds: build whole instead.
    pub fn add(&mut self, location: &str, o: &Object) -> Option<Vec<SourceError>> {
        let before = self.b.errors.len();
        match o {
            Object::ServiceDNSRecord(r) => self.b.add_service_record(location, r),
            Object::IngressDNSRecord(r) => self.b.add_ingress_record(location, r),
            _ => {}
        }
        let errors = self.b.errors.split_off(before);
        (!self.b.conflicts).then_some(errors)
    }

    /// A dynamic name, for writing (its targets are moved out when compiled).
    pub fn dyn_name_mut(&mut self, i: usize) -> Option<&mut DynName> {
        self.b.cat.dyn_names.get_mut(i)
    }

    /// Replaces the (record, cluster) pairs without ready endpoints.
    pub fn set_unready(&mut self, unready: &HashSet<(String, String)>) {
        if self.b.unready != *unready {
            self.b.unready = unready.clone();
        }
    }
}
