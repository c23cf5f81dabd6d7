//! How an endpoint is health-checked, as the catalog states it: the probe specification every
//! record carries (from `meridian.io/probe*` annotations and `spec.health` defaults) and the
//! probe kinds (registered in `probe/`, one file each).

use std::time::Duration;

use serde::Serialize;

pub use super::probe::ProbeKind;

/// How a record's targets are health-checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub port: u16,
    pub path: String,
    pub host: Option<String>,
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Inclusive range of HTTP statuses that count as healthy.
    pub expect_status: (u16, u16),
    /// Substring the HTTP body must contain, if set.
    pub expect_body: Option<String>,
    /// Skip TLS certificate verification (HTTPS probes).
    pub insecure: bool,
    /// PEM file of the CA(s) HTTPS probes verify against instead of the system roots
    /// (`meridian.io/probe-ca`, an absolute path on meridian's filesystem).
    pub ca: Option<std::path::PathBuf>,
}

mod duration_ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}
