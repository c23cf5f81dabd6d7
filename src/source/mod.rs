//! Sources of records. Each produces objects and zone files tagged with where they came from;
//! the snapshot publisher merges them.

pub mod file;
pub mod include;
pub mod kubernetes;
pub mod lint;
pub mod read;
pub mod yaml_depth;

use thiserror::Error;

/// A problem in one file, document or object. `location` names the file and line, or the file,
/// document and object; the message names the field.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{location}: {message}")]
pub struct SourceError {
    pub location: String,
    pub message: String,
}

impl SourceError {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        SourceError {
            location: location.into(),
            message: message.into(),
        }
    }
}

/// A value with the place it came from (`file:line (Kind ns/name)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub location: String,
    pub value: T,
}

/// Deserializes a value (YAML from files, JSON from the API server) into a typed object; the
/// error names the field path (`spec.recordTTL: invalid type …`).
pub fn typed<'de, T, D>(value: D) -> Result<T, String>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    typed_at(value).map_err(|(path, message)| message_at(&path, &message))
}

/// As [`typed`], with the error's field path (`.` for the whole value) and message apart.
pub fn typed_at<'de, T, D>(value: D) -> Result<T, (String, String)>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(value)
        .map_err(|e| (e.path().to_string(), e.into_inner().to_string()))
}

/// `path: message`, or the message alone for the whole value.
pub fn message_at(path: &str, message: &str) -> String {
    if path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// A source, as the publisher knows it: a name (metrics, logs) and its place among the sources
/// (lower first: on a name clash the earlier source's object keeps the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId {
    pub rank: u8,
    pub name: &'static str,
    /// How the locations of its objects start, to attribute the catalog's errors.
    pub location_prefix: Option<&'static str>,
}

/// The file source (the zones directory): first, so its objects keep their names on a clash;
/// its locations are file paths.
pub const FILE: SourceId = SourceId {
    rank: 0,
    name: "file",
    location_prefix: None,
};

/// Identity of an object within its source, in the source's order (the catalog's order: on a
/// name clash the earlier object keeps the name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    /// The object's group in the source's order (a kind, or a file's position).
    pub group: u32,
    /// Its identity within the group, in order.
    pub id: String,
}

/// What one source contributes to the catalog.
#[derive(Clone, Debug, Default)]
pub struct Fragment {
    pub zone_files: Vec<file::ZoneFile>,
    pub objects: std::collections::BTreeMap<ObjectKey, Located<crate::model::Object>>,
    /// (`Kind ns/name` of a record, cluster) pairs without ready endpoints (Kubernetes
    /// readiness): those targets are served marked down.
    pub unready: std::collections::HashSet<(String, String)>,
}

/// A source's change, as it hands it to the publisher.
#[derive(Clone, Debug)]
pub enum Change {
    /// Everything the source serves now, replacing what it served before.
    Replace(Fragment),
    /// Objects changed (added or replaced) and gone since the last change; the readiness pairs
    /// whole. The publisher redoes only what these objects imply.
    Patch {
        upserts: Vec<(ObjectKey, Located<crate::model::Object>)>,
        removed: Vec<ObjectKey>,
        unready: std::collections::HashSet<(String, String)>,
    },
}

impl Fragment {
    pub fn is_empty(&self) -> bool {
        self.zone_files.is_empty() && self.objects.is_empty() && self.unready.is_empty()
    }

    /// Applies a change; returns the keys it touched (None: replaced whole).
    pub fn apply(&mut self, change: Change) -> Option<Vec<ObjectKey>> {
        match change {
            Change::Replace(f) => {
                *self = f;
                None
            }
            Change::Patch {
                upserts,
                removed,
                unready,
            } => {
                let mut keys = Vec::with_capacity(upserts.len() + removed.len());
                for (k, o) in upserts {
                    self.objects.insert(k.clone(), o);
                    keys.push(k);
                }
                for k in removed {
                    self.objects.remove(&k);
                    keys.push(k);
                }
                self.unready = unready;
                Some(keys)
            }
        }
    }

    /// The change from `self` to `next`: a patch of the objects that differ.
    pub fn diff(&self, next: &Fragment) -> Change {
        // Zone files are replaced whole (the file source's, which replaces everything anyway).
        if !self.zone_files.is_empty() || !next.zone_files.is_empty() {
            return Change::Replace(next.clone());
        }
        let upserts = next
            .objects
            .iter()
            .filter(|(k, o)| self.objects.get(*k) != Some(*o))
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        let removed = self
            .objects
            .keys()
            .filter(|k| !next.objects.contains_key(*k))
            .cloned()
            .collect();
        Change::Patch {
            upserts,
            removed,
            unready: next.unready.clone(),
        }
    }
}

impl Change {
    /// Whether applying it changes nothing, given the fragment it applies to.
    pub fn is_noop(&self, to: &Fragment) -> bool {
        match self {
            Change::Replace(_) => false,
            Change::Patch {
                upserts,
                removed,
                unready,
            } => upserts.is_empty() && removed.is_empty() && *unready == to.unready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Domain, Object};

    fn keyed(name: &str, domain: &str) -> (ObjectKey, Located<Object>) {
        let o = Object::Domain(Domain {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            domain: domain.into(),
            name_server: None,
        });
        (
            ObjectKey {
                group: 0,
                id: name.into(),
            },
            Located {
                location: name.into(),
                value: o,
            },
        )
    }

    #[test]
    fn a_diff_applied_gives_the_next_fragment() {
        let before = Fragment {
            objects: [keyed("a", "a.example"), keyed("b", "b.example")]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let next = Fragment {
            objects: [keyed("a", "a.example"), keyed("c", "c.example")]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let change = before.diff(&next);
        let Change::Patch {
            upserts, removed, ..
        } = &change
        else {
            panic!("a patch");
        };
        assert_eq!(upserts.len(), 1, "only the new object");
        assert_eq!(removed, &[keyed("b", "").0]);
        assert!(!change.is_noop(&before));
        let mut applied = before.clone();
        let touched = applied.apply(change);
        assert_eq!(touched.map(|t| t.len()), Some(2));
        assert_eq!(applied.objects, next.objects);
        assert!(next.diff(&next).is_noop(&next));
    }
}
