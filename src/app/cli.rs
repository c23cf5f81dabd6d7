//! The command line: every command and flag (each settable from the environment as
//! `MERIDIAN_<FLAG>`), and the value parsers that refuse a bad value with the flag's name before
//! anything starts.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::{AdminClient, ClientError};
use crate::model::{DurationError, MAX_DRAIN, MIN_DRAIN, parse_duration_within};
use crate::source::file::load::Paths;
use crate::source::kubernetes::{KubeOptions, leader::LeaseOptions};

#[derive(Parser, Debug)]
#[command(
    name = "meridian",
    version = crate::metrics::VERSION_LINE,
    about = "Authoritative DNS that answers with the nearest healthy cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MERIDIAN_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve DNS (UDP and TCP) and the admin API.
    // Boxed: the serve flags dwarf the other commands'.
    Serve(Box<ServeArgs>),
    /// Validate zones, objects and configuration; exit non-zero naming file and line or object
    /// and field.
    Check(SourceArgs),
    /// Show the answer a client gets for a name, and why.
    Explain(ExplainArgs),
    /// Drain a cluster out of every answer (a failover drill), via the admin API.
    Drain(DrainArgs),
    /// End a drain, via the admin API.
    Undrain(UndrainArgs),
    /// Print the running server's state (a table; --json for machines), via the admin API.
    State(StateArgs),
    /// Print a shell completion script: `meridian completions bash > /etc/bash_completion.d/meridian`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Directory of zone files (*.zone) and objects (*.yaml).
    #[arg(long, default_value = "zones", env = "MERIDIAN_ZONES")]
    pub zones: PathBuf,
    /// GeoIP database (MaxMind DB: GeoIP2/GeoLite2/DB-IP City or Country); overrides the
    /// configuration's `geoip`.
    #[arg(long, env = "MERIDIAN_GEOIP")]
    pub geoip: Option<PathBuf>,
}

impl SourceArgs {
    /// What the file source reads.
    pub fn paths(&self) -> Paths {
        Paths {
            zones: self.zones.clone(),
            geoip: self.geoip.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// DNS listen address (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:5353", env = "MERIDIAN_LISTEN")]
    pub listen: SocketAddr,
    /// Admin HTTP listen address, ADDR:PORT (or http://ADDR:PORT, as the client commands take it).
    #[arg(long, default_value = "127.0.0.1:9153", env = "MERIDIAN_ADMIN", value_parser = crate::client::parse_bind)]
    pub admin: SocketAddr,
    /// Bearer token for the admin API; required when --admin is not loopback.
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// UDP worker threads (default: one per core).
    #[arg(long, env = "MERIDIAN_UDP_WORKERS")]
    pub udp_workers: Option<usize>,
    /// Most simultaneous DNS-over-TCP connections.
    #[arg(long, default_value_t = 1024, env = "MERIDIAN_TCP_MAX_CONNECTIONS")]
    pub tcp_max_connections: usize,
    /// Most simultaneous DNS-over-TCP connections from one address.
    #[arg(long, default_value_t = 64, env = "MERIDIAN_TCP_MAX_PER_SOURCE")]
    pub tcp_max_per_source: usize,
    /// How often to look for changed zone, YAML and GeoIP files (reloaded like SIGHUP);
    /// 0 turns watching off.
    #[arg(long, default_value = "1s", value_parser = watch_interval, env = "MERIDIAN_WATCH_INTERVAL")]
    pub watch_interval: Duration,
    /// Idle timeout of DNS-over-TCP connections (RFC 7766), e.g. 10s; at most 1h.
    #[arg(long, default_value = "10s", value_parser = tcp_idle_timeout, env = "MERIDIAN_TCP_IDLE_TIMEOUT")]
    pub tcp_idle_timeout: Duration,
    /// A reload (SIGHUP or a file change) not finished in this long is abandoned and counted
    /// as failed; the previous state keeps serving (1ms to 1h).
    #[arg(long, default_value = "30s", value_parser = reload_timeout, env = "MERIDIAN_RELOAD_TIMEOUT")]
    pub reload_timeout: Duration,
    /// On SIGTERM, keep answering DNS this long with /readyz failing (so load balancers and
    /// the Kubernetes endpoints controller take the replica out first), then stop; e.g. 5s.
    #[arg(long, default_value = "0s", value_parser = lameduck, env = "MERIDIAN_LAMEDUCK")]
    pub lameduck: Duration,
    /// This replica's identity in NSID (RFC 5001) and CHAOS id.server answers (default: the
    /// configuration's `nsid`, else POD_NAME, else the host name).
    #[arg(long, env = "MERIDIAN_NSID")]
    pub nsid: Option<String>,
    /// Without Kubernetes: where drains are kept across restarts (default:
    /// .meridian-drains.json in the zones directory). With Kubernetes, Drain objects are.
    #[arg(long, env = "MERIDIAN_DRAINS_FILE")]
    pub drains_file: Option<PathBuf>,
    /// Another replica's admin API (ADDR:PORT), repeatable: health is then combined by quorum
    /// from every replica's probes (README "Health from several vantage points"). The peers
    /// are polled with --admin-token, so replicas share one token.
    #[arg(long = "peer", env = "MERIDIAN_PEER", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// NAME:PORT resolving to the replicas' admin APIs (in Kubernetes, a headless Service over
    /// the meridian pods), re-resolved as pods come and go; this replica's own address is
    /// recognised by its name (--nsid, POD_NAME) and skipped.
    #[arg(long, env = "MERIDIAN_PEERS_DNS")]
    pub peers_dns: Option<String>,
    /// How often peers' observations are fetched.
    #[arg(long, default_value = "1s", value_parser = peer_interval, env = "MERIDIAN_PEER_INTERVAL")]
    pub peer_interval: Duration,
    /// A peer votes while heard within this many times the longer of --peer-interval and the
    /// longest probe interval.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100), env = "MERIDIAN_PEER_STALE_INTERVALS")]
    pub peer_stale_intervals: u32,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The Kubernetes source (beside the zones directory; both feed the same snapshot).
#[derive(Args, Debug, Clone)]
pub struct KubeArgs {
    /// Read the host cluster through this kubeconfig file.
    #[arg(long, env = "MERIDIAN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Read the host cluster with the in-cluster configuration (the default when
    /// KUBERNETES_SERVICE_HOST is set).
    #[arg(long, env = "MERIDIAN_KUBERNETES")]
    pub kubernetes: bool,
    /// Namespace of the KubeFedCluster objects and their Secrets.
    #[arg(
        long,
        default_value = "kube-federation-system",
        env = "MERIDIAN_KUBEFED_NAMESPACE"
    )]
    pub kubefed_namespace: String,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else the KubeFed namespace).
    #[arg(long, env = "MERIDIAN_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "meridian", env = "MERIDIAN_LEASE_NAME")]
    pub lease_name: String,
    /// How long a leader's lease lasts without renewal (whole seconds, at most 1h), e.g. 15s.
    #[arg(long, default_value = "15s", value_parser = lease_seconds, env = "MERIDIAN_LEASE_DURATION")]
    pub lease_duration: u64,
    /// How long before expiry the leader renews (whole seconds), e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = lease_seconds, env = "MERIDIAN_LEASE_GRACE")]
    pub lease_grace: u64,
    /// This replica's identity in the Lease (default: POD_NAME, else host name and pid).
    #[arg(long, env = "MERIDIAN_IDENTITY")]
    pub identity: Option<String>,
    /// A member cluster whose API server fails (or has not answered) this long is offline.
    #[arg(long, default_value = "10s", value_parser = member_offline_after, env = "MERIDIAN_MEMBER_OFFLINE_AFTER")]
    pub member_offline_after: Duration,
    /// How long an expired Drain object stays (listed by `state` as expired) before the leader
    /// deletes it (1s to 168h).
    #[arg(long, default_value = "1h", value_parser = drain_for, env = "MERIDIAN_DRAIN_KEEP_EXPIRED")]
    pub drain_keep_expired: Duration,
}

impl KubeArgs {
    /// None when no Kubernetes source is configured.
    pub fn options(&self) -> Result<Option<KubeOptions>> {
        let in_cluster = self.kubernetes || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if self.kubeconfig.is_none() && !in_cluster {
            return Ok(None);
        }
        let (duration, grace) = (self.lease_duration, self.lease_grace);
        if grace >= duration {
            bail!("--lease-grace must be shorter than --lease-duration");
        }
        let offline = self.member_offline_after;
        let from_pod = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        let identity = self
            .identity
            .clone()
            .or_else(|| from_pod("POD_NAME"))
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "meridian".to_string());
                format!("{host}-{}", std::process::id())
            });
        Ok(Some(KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            kubefed_namespace: self.kubefed_namespace.clone(),
            lease: LeaseOptions {
                namespace: self
                    .lease_namespace
                    .clone()
                    .or_else(|| from_pod("POD_NAMESPACE"))
                    .unwrap_or_else(|| self.kubefed_namespace.clone()),
                name: self.lease_name.clone(),
                identity,
                duration,
                grace,
            },
            member_offline_after: offline,
            drain_keep_expired: self.drain_keep_expired,
        }))
    }
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The name to ask about.
    pub name: String,
    /// Query type.
    #[arg(long = "type", default_value = "A", env = "MERIDIAN_TYPE")]
    pub qtype: String,
    /// The client address (as it would arrive in ECS or as the source address).
    #[arg(long, env = "MERIDIAN_CLIENT")]
    pub client: IpAddr,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Ask a running server instead (live health and drains): ADDR:PORT or a URL.
    #[arg(long, env = "MERIDIAN_ADMIN")]
    pub admin: Option<String>,
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print JSON.
    #[arg(long, env = "MERIDIAN_JSON")]
    pub json: bool,
}

/// Where the running server's admin API is, and its token: one pair for every client command.
#[derive(Args, Debug)]
pub struct AdminConn {
    /// Admin API of the running server: ADDR:PORT (as `serve --admin`) or a URL.
    #[arg(long, default_value = "127.0.0.1:9153", env = "MERIDIAN_ADMIN")]
    pub admin: String,
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

impl AdminConn {
    pub(crate) fn client(&self) -> Result<AdminClient, ClientError> {
        AdminClient::new(&self.admin, self.admin_token.as_deref())
    }
}

#[derive(Args, Debug)]
pub struct UndrainArgs {
    /// Cluster to undrain.
    // Optional to clap: a missing name is the command's error ("undrain needs a cluster name").
    #[arg(required = false)]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub conn: AdminConn,
    /// Print the server's JSON reply.
    #[arg(long, env = "MERIDIAN_JSON")]
    pub json: bool,
    /// Who asks (undrain; logged and in the Event); default: $USER@host.
    #[arg(long, env = "MERIDIAN_WHO")]
    pub who: Option<String>,
    /// End only the drains scoped to this record (`namespace/name`; repeat or
    /// comma-separate); default: every drain of the cluster.
    #[arg(long = "record", value_delimiter = ',', env = "MERIDIAN_DRAIN_RECORDS")]
    pub records: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StateArgs {
    #[command(flatten)]
    pub conn: AdminConn,
    /// Print the JSON of GET /api/v1/state instead of the table.
    #[arg(long, env = "MERIDIAN_JSON")]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Cluster to drain.
    pub cluster: String,
    /// Drain for this long, then end by itself (e.g. 10m; 1s to 168h); default: until
    /// undrained.
    #[arg(long = "for", value_parser = drain_for, env = "MERIDIAN_DRAIN_FOR")]
    pub duration: Option<Duration>,
    /// Why (shown by `state`, the status page and the drain's log line and event).
    #[arg(long, env = "MERIDIAN_DRAIN_REASON")]
    pub reason: Option<String>,
    /// Who asks (kept with the drain, logged and in the Event); default: $USER@host.
    #[arg(long, env = "MERIDIAN_WHO")]
    pub who: Option<String>,
    /// Drain the cluster for this record's names only (`namespace/name` of a
    /// ServiceDNSRecord or IngressDNSRecord; repeat or comma-separate); default: every record.
    #[arg(long = "record", value_delimiter = ',', env = "MERIDIAN_DRAIN_RECORDS")]
    pub records: Vec<String>,
    #[command(flatten)]
    pub conn: AdminConn,
    /// Print the server's JSON reply.
    #[arg(long, env = "MERIDIAN_JSON")]
    pub json: bool,
}

// Duration flags, checked by clap so a bad value is refused with the flag's name before anything
// starts (and a huge one cannot overflow the clock later).

fn watch_interval(s: &str) -> Result<Duration, DurationError> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration_within(s, Duration::from_millis(10), Duration::from_secs(3600))
}

fn peer_interval(s: &str) -> Result<Duration, DurationError> {
    parse_duration_within(s, Duration::from_millis(50), Duration::from_secs(3600))
}

fn tcp_idle_timeout(s: &str) -> Result<Duration, DurationError> {
    parse_duration_within(s, Duration::from_millis(100), Duration::from_secs(3600))
}

fn reload_timeout(s: &str) -> Result<Duration, DurationError> {
    parse_duration_within(s, Duration::from_millis(1), Duration::from_secs(3600))
}

fn lameduck(s: &str) -> Result<Duration, DurationError> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration_within(s, Duration::ZERO, Duration::from_secs(600))
}

fn member_offline_after(s: &str) -> Result<Duration, DurationError> {
    parse_duration_within(s, Duration::from_secs(1), Duration::from_secs(3600))
}

fn drain_for(s: &str) -> Result<Duration, DurationError> {
    parse_duration_within(s, MIN_DRAIN, MAX_DRAIN)
}

/// Lease durations: whole seconds, because the Lease object counts seconds.
fn lease_seconds(s: &str) -> Result<u64, String> {
    let d = parse_duration_within(s, Duration::from_secs(1), Duration::from_secs(3600))
        .map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "{s:?} must be a whole number of seconds (the Lease counts seconds)"
        ));
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod cli_tests {
    use super::*;
    use clap::CommandFactory;

    /// Every flag of every command can be set from the environment, as `MERIDIAN_<FLAG>`.
    #[test]
    fn every_flag_has_a_meridian_environment_variable() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_positional() || matches!(id, "help" | "version") {
                    continue;
                }
                let ok = a
                    .get_env()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.starts_with("MERIDIAN_"));
                if !ok {
                    missing.push(format!("{path} --{}", a.get_long().unwrap_or(id)));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "meridian", &mut missing);
        assert!(
            missing.is_empty(),
            "flags without MERIDIAN_* variables: {missing:?}"
        );
    }
}
