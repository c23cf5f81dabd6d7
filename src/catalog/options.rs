//! Record behaviour from `meridian.io/*` annotations: which keys each kind takes, how each
//! parses (every error names its annotation), and the options a record's annotations give.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::{Builder, ProbeKind, ProbeSpec};
use crate::config::HealthDefaults;
use crate::geo::GeoPoint;
use crate::model::{
    self, AllDown, MAX_PROBE_INTERVAL, MAX_PROBE_TIMEOUT, Policy, parse_duration_within,
};

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

/// A record's `meridian.io/*` annotations and the options they give.
pub(super) type OptionsEntry = (Vec<(String, String)>, Arc<RecordOptions>);

/// The `meridian.io/*` annotations of an object, in key order.
pub(super) fn meridian_annotations(meta: &ObjectMeta) -> impl Iterator<Item = (&String, &String)> {
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

pub(super) fn annotation<'m>(meta: &'m ObjectMeta, key: &str) -> Option<&'m str> {
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

pub(super) fn ann_field(key: &str) -> String {
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
    // Each probe kind says its own (health/probe/<kind>.rs).
    let default_port = kind.default_port();
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

impl Builder {
    pub(super) fn options(&mut self, loc: &str, meta: &ObjectMeta) -> Option<Arc<RecordOptions>> {
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
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::catalog) fn meta(name: &str, ns: &str, ann: &[(&str, &str)]) -> ObjectMeta {
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
