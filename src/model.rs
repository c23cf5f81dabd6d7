//! Shared vocabulary: the KubeFed / external-dns object shapes meridian reads (from files or the
//! API server), and the per-record options carried in `meridian.io/*` annotations. No I/O here.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

pub const GROUP_MULTICLUSTERDNS: &str = "multiclusterdns.kubefed.io/v1alpha1";
pub const GROUP_EXTERNALDNS: &str = "externaldns.k8s.io/v1alpha1";
pub const GROUP_KUBEFED_CORE: &str = "core.kubefed.io/v1beta1";
pub const GROUP_MERIDIAN: &str = "meridian.io/v1alpha1";

/// Annotation prefix for per-record and per-cluster behaviour.
pub const ANNOTATION_PREFIX: &str = "meridian.io/";

/// KubeFed `Domain`: note `domain` and `nameServer` sit at the top level, not under `spec`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub domain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_server: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDNSRecord {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ServiceDNSRecordSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceDNSRecordStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDNSRecordSpec {
    pub domain_ref: String,
    #[serde(default, rename = "recordTTL", skip_serializing_if = "Option::is_none")]
    pub record_ttl: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_service_without_endpoints: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDNSRecordStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default)]
    pub dns: Vec<ClusterDNS>,
}

/// One member cluster's view of a federated Service (`status.dns[]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDNS {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    #[serde(default)]
    pub load_balancer: LoadBalancerStatus,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct LoadBalancerStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct LoadBalancerIngress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressDNSRecord {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: IngressDNSRecordSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<IngressDNSRecordStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressDNSRecordSpec {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, rename = "recordTTL", skip_serializing_if = "Option::is_none")]
    pub record_ttl: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressDNSRecordStatus {
    #[serde(default)]
    pub dns: Vec<ClusterIngressDNS>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIngressDNS {
    pub cluster: String,
    #[serde(default)]
    pub load_balancer: LoadBalancerStatus,
}

/// `DNSEndpoint` of either API group: external-dns' shape is a superset of KubeFed's, and the
/// extra fields (`setIdentifier`, `providerSpecific`) are accepted and ignored.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DNSEndpoint {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DNSEndpointSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DNSEndpointSpec {
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub dns_name: String,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default = "default_record_type")]
    pub record_type: String,
    #[serde(default, rename = "recordTTL", skip_serializing_if = "Option::is_none")]
    pub record_ttl: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_specific: Vec<ProviderSpecificProperty>,
}

fn default_record_type() -> String {
    "A".to_string()
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ProviderSpecificProperty {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// KubeFed `KubeFedCluster`: a member cluster.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeFedCluster {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: KubeFedClusterSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<KubeFedClusterStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeFedClusterSpec {
    #[serde(default)]
    pub api_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalSecretReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_tls_validations: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct LocalSecretReference {
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeFedClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

/// Any object meridian understands, tagged by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Domain(Domain),
    ServiceDNSRecord(ServiceDNSRecord),
    IngressDNSRecord(IngressDNSRecord),
    DNSEndpoint(DNSEndpoint),
    KubeFedCluster(KubeFedCluster),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Domain(_) => "Domain",
            Object::ServiceDNSRecord(_) => "ServiceDNSRecord",
            Object::IngressDNSRecord(_) => "IngressDNSRecord",
            Object::DNSEndpoint(_) => "DNSEndpoint",
            Object::KubeFedCluster(_) => "KubeFedCluster",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Domain(o) => &o.metadata,
            Object::ServiceDNSRecord(o) => &o.metadata,
            Object::IngressDNSRecord(o) => &o.metadata,
            Object::DNSEndpoint(o) => &o.metadata,
            Object::KubeFedCluster(o) => &o.metadata,
        }
    }

    /// `Kind namespace/name`, for error messages and logs.
    pub fn display_name(&self) -> String {
        ObjectRef::of(self.kind(), self.metadata()).to_string()
    }
}

/// A reference to an object, printed `Kind namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn of(kind: &'static str, meta: &ObjectMeta) -> Self {
        ObjectRef {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

// The routing policies live in `routing/` (one file each); parsed from annotations there.
pub use crate::routing::{AllDown, Policy};

/// A duration annotation, flag or query parameter that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {input:?}: {reason} (expected e.g. 500ms, 2s, 1m30s, 1h)")]
    Invalid { input: String, reason: String },
    #[error("duration {input:?} is shorter than the minimum {min}")]
    TooShort { input: String, min: String },
    #[error("duration {input:?} is longer than the maximum {max}")]
    TooLong { input: String, max: String },
}

/// Longest drain (a failover drill); longer ones are refused rather than left to be forgotten.
pub const MAX_DRAIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// Shortest drain: less than a second is shorter than any TTL a resolver would honour.
pub const MIN_DRAIN: Duration = Duration::from_secs(1);
/// Longest probe interval (and so timeout): a target probed less often is not health-checked.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest probe timeout: a probe may hang this long before it counts as failed.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Parses a Kubernetes-style (Go `time.ParseDuration`) duration: `500ms`, `2s`, `1m`, `1h`,
/// compounds like `1m30s`, a fraction like `1.5s`, or a bare `0`. Values too large to represent
/// are an error, never a panic.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let input = s.trim();
    let invalid = |reason: &str| DurationError::Invalid {
        input: s.to_string(),
        reason: reason.to_string(),
    };
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    // Only the Go grammar: jiff's friendly format also reads `2 seconds`, `1h ago` and signs,
    // which a Kubernetes manifest never means.
    if input.is_empty() {
        return Err(invalid("empty"));
    }
    if !input.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(invalid("must start with a number"));
    }
    if !input
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'n' | 'u' | 'µ' | 'm' | 's' | 'h'))
    {
        return Err(invalid("only digits and the units ns, us, ms, s, m, h"));
    }
    let parsed = jiff::fmt::friendly::SpanParser::new()
        .parse_duration(input)
        .map_err(|e| invalid(&e.to_string()))?;
    Duration::try_from(parsed).map_err(|e| invalid(&e.to_string()))
}

/// [`parse_duration`] within `min..=max` (both inclusive).
pub fn parse_duration_within(
    s: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, DurationError> {
    let d = parse_duration(s)?;
    if d < min {
        return Err(DurationError::TooShort {
            input: s.to_string(),
            min: format_duration(min),
        });
    }
    if d > max {
        return Err(DurationError::TooLong {
            input: s.to_string(),
            max: format_duration(max),
        });
    }
    Ok(d)
}

/// Formats a duration the way `parse_duration` reads it.
/// Unix seconds (the drains file, the peers' observations); 0 before the epoch.
pub fn to_unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Back from Unix seconds; None for a negative, non-finite or out-of-range value.
pub fn from_unix(s: f64) -> Option<std::time::SystemTime> {
    if !s.is_finite() || s < 0.0 {
        return None;
    }
    std::time::SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(s).ok()?)
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if !ms.is_multiple_of(60_000) || ms == 0 {
        format!("{}s", ms / 1000)
    } else if !ms.is_multiple_of(3_600_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}h", ms / 3_600_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 days").is_err());
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(MAX_DRAIN), "168h");
        for d in ["1h", "90m", "2s", "500ms", "168h"] {
            assert_eq!(
                parse_duration(&format_duration(parse_duration(d).expect(d))).as_ref(),
                parse_duration(d).as_ref()
            );
        }
    }

    /// Issue 11: `Duration::from_secs_f64` panicked on these; every one is an error now.
    #[test]
    fn huge_tiny_and_garbage_durations_are_errors_not_panics() {
        for bad in [
            "99999999999999999999h",
            "4000000000000000h",
            "18446744073709551616s",
            "1e300s",
            "-1s",
            "2 seconds",
            "1h ago",
            "PT1H",
            "ms",
            ".",
            "1.s.",
            "\u{1F600}",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        // Representable but absurd: refused by the bounds of each use.
        assert!(matches!(
            parse_duration_within("1000000000000h", MIN_DRAIN, MAX_DRAIN),
            Err(DurationError::TooLong { .. })
        ));
        assert!(matches!(
            parse_duration_within("0.0001ms", MIN_DRAIN, MAX_DRAIN),
            Err(DurationError::TooShort { .. })
        ));
        assert!(matches!(
            parse_duration_within("0s", MIN_DRAIN, MAX_DRAIN),
            Err(DurationError::TooShort { .. })
        ));
        assert_eq!(
            parse_duration_within("168h", MIN_DRAIN, MAX_DRAIN),
            Ok(MAX_DRAIN)
        );
        assert_eq!(
            parse_duration_within("169h", MIN_DRAIN, MAX_DRAIN)
                .unwrap_err()
                .to_string(),
            "duration \"169h\" is longer than the maximum 168h"
        );
    }

    #[test]
    fn policy_names() {
        assert_eq!("failover".parse::<Policy>(), Ok(Policy::Failover));
        assert!("nearest".parse::<Policy>().unwrap_err().contains("geo"));
        assert_eq!("servfail".parse::<AllDown>(), Ok(AllDown::Servfail));
    }

    #[test]
    fn external_dns_endpoint_fields_are_accepted() {
        let json = r#"{"metadata":{"name":"x"},"spec":{"endpoints":[{"dnsName":"a.example.com",
            "targets":["192.0.2.1"],"recordType":"A","setIdentifier":"eu",
            "providerSpecific":[{"name":"aws/weight","value":"10"}]}]}}"#;
        let ep: DNSEndpoint = serde_json::from_str(json).expect("parses");
        assert_eq!(ep.spec.endpoints[0].set_identifier.as_deref(), Some("eu"));
    }
}
