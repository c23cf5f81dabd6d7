//! Server configuration: the raw serde shape of a `MeridianConfig` document (one may sit among the
//! YAML files in `zones/`) and its validated form. Errors name the field.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::dns::rrl::RrlConfig;
use crate::model::{MAX_PROBE_INTERVAL, MAX_PROBE_TIMEOUT, parse_duration_within};

#[derive(Debug, Error, PartialEq)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// `kind: MeridianConfig` document, `spec` part. Unknown fields are errors: a typo in a
/// production config must not be silently ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    /// GeoIP database (MaxMind DB format), relative to the zones directory.
    pub geoip: Option<String>,
    /// Cap on the TTL of health-dependent answers, seconds.
    #[serde(rename = "maxDynamicTTL")]
    pub max_dynamic_ttl: Option<u32>,
    /// Cluster whose location stands in for clients the GeoIP database cannot place.
    pub default_cluster: Option<String>,
    /// EDNS UDP payload size we advertise and honour at most.
    pub udp_payload_size: Option<u16>,
    /// Answer for CHAOS `version.bind`; absent means REFUSED.
    pub version_bind: Option<String>,
    /// Answer for CHAOS `id.server` / `hostname.bind`; absent means this replica's identity.
    pub id_server: Option<String>,
    /// NSID (RFC 5001) to send when asked; `--nsid` wins, absent means this replica's identity.
    pub nsid: Option<String>,
    /// false: do not reveal this replica's default identity (pod or host name) in NSID or
    /// CHAOS answers; explicitly configured values are still served.
    pub identity: Option<bool>,
    #[serde(default)]
    pub health: RawHealth,
    /// Response rate limiting per client prefix (UDP).
    #[serde(default)]
    pub rate_limit: RawRateLimit,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRateLimit {
    /// Responses per second per prefix; 0 (default) disables.
    pub responses_per_second: Option<u32>,
    /// Every Nth limited response is sent truncated instead of dropped (default 2; 0 drops all).
    pub slip: Option<u32>,
    pub ipv4_prefix_length: Option<u8>,
    pub ipv6_prefix_length: Option<u8>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHealth {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// Default probe kind for records without `meridian.io/probe`: http, https, tcp or none.
    pub probe: Option<String>,
    pub probe_port: Option<u16>,
    pub probe_path: Option<String>,
    /// Whether a target counts as up before its first probe result.
    pub up_until_first_result: Option<bool>,
    /// Upper bound on probes in flight at once.
    pub max_concurrent_probes: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub geoip: Option<PathBuf>,
    pub max_dynamic_ttl: u32,
    pub default_cluster: Option<String>,
    pub udp_payload_size: u16,
    pub version_bind: Option<String>,
    pub id_server: Option<String>,
    pub nsid: Option<String>,
    pub identity: bool,
    pub health: HealthDefaults,
    pub rrl: RrlConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthDefaults {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub probe: String,
    pub probe_port: Option<u16>,
    pub probe_path: String,
    pub up_until_first_result: bool,
    pub max_concurrent_probes: usize,
}

impl Default for HealthDefaults {
    fn default() -> Self {
        HealthDefaults {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            probe: "none".to_string(),
            probe_port: None,
            probe_path: "/".to_string(),
            up_until_first_result: true,
            max_concurrent_probes: 512,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            geoip: None,
            max_dynamic_ttl: 30,
            default_cluster: None,
            udp_payload_size: 1232,
            version_bind: None,
            id_server: None,
            nsid: None,
            identity: true,
            health: HealthDefaults::default(),
            rrl: RrlConfig::default(),
        }
    }
}

impl RawConfig {
    /// Validates; relative paths are resolved against `base` (the zones directory).
    pub fn validate(&self, base: &Path) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        if let Some(g) = &self.geoip {
            if g.trim().is_empty() {
                return Err(err("spec.geoip", "must not be empty"));
            }
            s.geoip = Some(base.join(g));
        }
        if let Some(ttl) = self.max_dynamic_ttl {
            if ttl == 0 {
                return Err(err("spec.maxDynamicTTL", "must be at least 1 second"));
            }
            s.max_dynamic_ttl = ttl;
        }
        s.default_cluster = self.default_cluster.clone();
        if let Some(p) = self.udp_payload_size {
            if !(512..=4096).contains(&p) {
                return Err(err(
                    "spec.udpPayloadSize",
                    format!("{p} is outside 512..=4096"),
                ));
            }
            s.udp_payload_size = p;
        }
        // Like a CHAOS TXT string: 1 to 255 octets.
        if let Some(v) = &self.nsid
            && (v.is_empty() || v.len() > 255)
        {
            return Err(err(
                "spec.nsid",
                format!("{} octets is outside 1..=255", v.len()),
            ));
        }
        s.version_bind = self.version_bind.clone();
        s.id_server = self.id_server.clone();
        s.nsid = self.nsid.clone();
        s.identity = self.identity.unwrap_or(true);
        let h = &self.health;
        let d = &mut s.health;
        if let Some(v) = &h.interval {
            d.interval = parse_duration_within(v, Duration::from_millis(100), MAX_PROBE_INTERVAL)
                .map_err(|e| err("spec.health.interval", e.to_string()))?;
        }
        if let Some(v) = &h.timeout {
            d.timeout = parse_duration_within(v, Duration::from_millis(10), MAX_PROBE_TIMEOUT)
                .map_err(|e| err("spec.health.timeout", e.to_string()))?;
        }
        for (field, value, slot) in [
            ("spec.health.rise", h.rise, &mut d.rise),
            ("spec.health.fall", h.fall, &mut d.fall),
        ] {
            if let Some(v) = value {
                if v == 0 || v > 100 {
                    return Err(err(field, format!("{v} is outside 1..=100")));
                }
                *slot = v;
            }
        }
        if let Some(p) = &h.probe {
            // The probe kinds are registered in `health::probe`.
            if let Err(e) = p.parse::<crate::health::spec::ProbeKind>() {
                return Err(err("spec.health.probe", e));
            }
            d.probe = p.clone();
        }
        d.probe_port = h.probe_port;
        if let Some(p) = &h.probe_path {
            if !p.starts_with('/') {
                return Err(err("spec.health.probePath", "must start with /"));
            }
            d.probe_path = p.clone();
        }
        if let Some(v) = h.up_until_first_result {
            d.up_until_first_result = v;
        }
        if let Some(v) = h.max_concurrent_probes {
            if v == 0 {
                return Err(err("spec.health.maxConcurrentProbes", "must be positive"));
            }
            d.max_concurrent_probes = v;
        }
        let r = &self.rate_limit;
        if let Some(v) = r.responses_per_second {
            s.rrl.responses_per_second = v;
        }
        if let Some(v) = r.slip {
            if v > 10 {
                return Err(err("spec.rateLimit.slip", format!("{v} is outside 0..=10")));
            }
            s.rrl.slip = v;
        }
        if let Some(v) = r.ipv4_prefix_length {
            if v > 32 {
                return Err(err(
                    "spec.rateLimit.ipv4PrefixLength",
                    format!("{v} is above 32"),
                ));
            }
            s.rrl.ipv4_prefix = v;
        }
        if let Some(v) = r.ipv6_prefix_length {
            if v > 128 {
                return Err(err(
                    "spec.rateLimit.ipv6PrefixLength",
                    format!("{v} is above 128"),
                ));
            }
            s.rrl.ipv6_prefix = v;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Settings, String> {
        let raw: RawConfig = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        raw.validate(Path::new("/z")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_paths() {
        let s = parse("geoip: demo.mmdb\n").expect("valid");
        assert_eq!(s.geoip, Some(PathBuf::from("/z/demo.mmdb")));
        assert_eq!(s.max_dynamic_ttl, 30);
        assert_eq!(s.health.fall, 3);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            parse("maxDynamicTTL: 0\n").unwrap_err(),
            "spec.maxDynamicTTL: must be at least 1 second"
        );
        assert!(
            parse("health: {interval: 2 seconds}\n")
                .unwrap_err()
                .starts_with("spec.health.interval: invalid duration")
        );
        assert!(
            parse("health: {probe: icmp}\n")
                .unwrap_err()
                .starts_with("spec.health.probe: unknown probe")
        );
        assert!(parse("udpPayloadSize: 100\n").unwrap_err().contains("512"));
        assert!(
            parse("health: {interval: 99999999999999999999h}\n")
                .unwrap_err()
                .starts_with("spec.health.interval: invalid duration")
        );
        assert_eq!(
            parse("health: {interval: 2h}\n").unwrap_err(),
            "spec.health.interval: duration \"2h\" is longer than the maximum 1h"
        );
        assert_eq!(
            parse("health: {timeout: 2m}\n").unwrap_err(),
            "spec.health.timeout: duration \"2m\" is longer than the maximum 1m"
        );
        assert!(parse("geiop: x\n").unwrap_err().contains("unknown field"));
        assert_eq!(
            parse("nsid: \"\"\n").unwrap_err(),
            "spec.nsid: 0 octets is outside 1..=255"
        );
    }

    #[test]
    fn identity_settings() {
        let s = parse("nsid: ns-a\nidentity: false\n").expect("valid");
        assert_eq!(s.nsid.as_deref(), Some("ns-a"));
        assert!(!s.identity);
        assert!(parse("{}\n").expect("valid").identity);
    }
}
