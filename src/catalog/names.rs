//! Names in wire form: the one codec between hickory `Name`s and the lowercased, uncompressed
//! wire-form keys every table uses, and the one zone lookup (longest apex that is a suffix),
//! shared by the catalog builder and the compiled snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// Hasher of the name tables, which every query probes several times (the zone walk tries each
/// suffix of the name): foldhash, seeded per process, about ten times cheaper than std's SipHash
/// on 20–40-byte names. Keys come from configuration and the API server, not from queries; a
/// query only probes, so it cannot grow a collision chain.
pub type NameHasher = foldhash::fast::RandomState;

/// A table keyed by lowercased wire-form names.
pub type NameMap<V> = HashMap<WireName, V, NameHasher>;

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
pub fn wire_join(labels: &[&str], suffix: &[u8]) -> Result<WireName, String> {
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

pub(crate) fn ser_name<S: serde::Serializer>(n: &WireName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&wire_to_name(n).to_string())
}

pub(crate) fn ser_opt_name<S: serde::Serializer>(
    n: &Option<WireName>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match n {
        Some(n) => s.serialize_some(&wire_to_name(n).to_string()),
        None => s.serialize_none(),
    }
}

/// Wire form of a zone apex. hickory `Name`s already hold DNS's length limits, so this cannot
/// fail; if it did, the empty key contains no name, rather than the root's, which contains all.
pub fn apex_wire(apex: &Name) -> WireName {
    name_to_wire(apex).unwrap_or_else(|_| Arc::from(&b""[..]))
}

pub fn lower_fqdn(s: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(s.trim()).map_err(|e| format!("invalid name {s:?}: {e}"))?;
    n.set_fqdn(true);
    Ok(n.to_lowercase())
}

/// A single DNS label (region and zone names, namespaces, service names).
pub fn check_label(s: &str) -> Result<(), String> {
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

/// Zone apexes (wire form) by zone index: the zone of a name is the longest apex that is a
/// suffix of it, found by walking the name's suffixes from the longest.
#[derive(Clone, Debug, Default)]
pub struct ZoneIndex {
    apexes: NameMap<u32>,
}

impl ZoneIndex {
    /// Registers zone `zone` at `apex`; the first registration of an apex keeps it.
    pub fn insert(&mut self, apex: WireName, zone: u32) {
        self.apexes.entry(apex).or_insert(zone);
    }

    /// The zone holding a (lowercased, wire-form) name.
    #[inline]
    pub fn find(&self, name: &[u8]) -> Option<u32> {
        let mut i = 0;
        while i < name.len() {
            if let Some(z) = self.apexes.get(&name[i..]) {
                return Some(*z);
            }
            let len = name[i] as usize;
            if len == 0 {
                break;
            }
            i += len + 1;
        }
        None
    }

    /// The zone holding a name.
    pub fn find_name(&self, name: &Name) -> Option<u32> {
        self.find(&name_to_wire(name).ok()?)
    }

    pub fn len(&self) -> usize {
        self.apexes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apexes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_lowercase_keys() {
        let n = Name::from_ascii("WwW.Example.COM.").expect("name");
        assert_eq!(
            &*name_to_wire(&n).expect("wire"),
            b"\x03www\x07example\x03com\x00"
        );
    }

    #[test]
    fn the_longest_apex_holds_a_name() {
        let w = |s: &str| name_to_wire(&Name::from_ascii(s).expect("name")).expect("wire");
        let mut z = ZoneIndex::default();
        z.insert(w("example.com."), 0);
        z.insert(w("sub.example.com."), 1);
        assert_eq!(z.find(&w("a.sub.example.com.")), Some(1));
        assert_eq!(z.find(&w("sub.example.com.")), Some(1));
        assert_eq!(z.find(&w("b.example.com.")), Some(0));
        assert_eq!(z.find(&w("example.org.")), None);
    }
}
