//! The edges: command line, loading, and the serve lifecycle (build → run → drain).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use arc_swap::ArcSwap;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin::{self, AdminState};
use crate::catalog::{self, Inputs};
use crate::client::{AdminClient, ClientError};
use crate::dns::server::{self, TcpLimits};
use crate::geo::GeoDb;
use crate::health::HealthStatus;
use crate::metrics;
use crate::model::{DurationError, MAX_DRAIN, MIN_DRAIN, parse_duration_within};
use crate::snapshot::compile::{self, Compiled};
use crate::snapshot::publisher::{self, FileInputs, Update};
use crate::snapshot::{Shared, Snapshot};
use crate::source::file;
use crate::source::kubernetes::{self, KubeOptions, leader::LeaseOptions};

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
    Undrain(AdminTarget),
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
    fn client(&self) -> Result<AdminClient, ClientError> {
        AdminClient::new(&self.admin, self.admin_token.as_deref())
    }
}

#[derive(Args, Debug)]
pub struct AdminTarget {
    /// Cluster name (drain/undrain).
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
    /// Undrain: end only the drains scoped to this record (`namespace/name`; repeat or
    /// comma-separate); default: every drain of the cluster.
    #[arg(long = "record", value_delimiter = ',', env = "MERIDIAN_DRAIN_RECORDS")]
    pub records: Vec<String>,
}

/// `$USER@host`: who runs this command, for drains' logs, objects and Events.
fn local_who() -> String {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        // SAFETY: getuid has no preconditions and cannot fail.
        .or_else(|| (unsafe { libc::getuid() } == 0).then(|| "root".to_string()))
        .unwrap_or_else(|| "unknown".to_string());
    format!("{user}@{}", admin::instance_name())
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

/// Everything loaded from the zones directory, validated.
pub struct Loaded {
    pub compiled: Compiled,
    pub geo: Option<Arc<GeoDb>>,
    pub files: Vec<PathBuf>,
    /// The file source's fragment, for the publisher to merge with other sources.
    pub inputs: FileInputs,
}

/// Loads, validates and compiles a zones directory. Errors are the lines `check` prints.
pub fn load(args: &SourceArgs) -> Result<Loaded, Vec<String>> {
    load_with(args, false)
}

/// As [`load`]; with `other_sources` (Kubernetes) the directory may be missing or hold no zone,
/// since Domains can come from the API server.
pub fn load_with(args: &SourceArgs, other_sources: bool) -> Result<Loaded, Vec<String>> {
    load_watched(args, other_sources).0
}

/// As [`load_with`], also returning every file the load read or tried to (zone, YAML and
/// included files, the GeoIP database), failed or not: the file watcher watches them.
pub fn load_watched(
    args: &SourceArgs,
    other_sources: bool,
) -> (Result<Loaded, Vec<String>>, Vec<PathBuf>) {
    let (loaded, mut errors) = if other_sources && !args.zones.exists() {
        (file::Loaded::default(), Vec::new())
    } else {
        file::load_dir(&args.zones)
    };
    if other_sources {
        errors.retain(|e| !e.message.starts_with("cannot read directory"));
    }
    // Errors with a place (file errors, the configuration's, the catalog's), put in file order
    // below; then the GeoIP database's.
    let mut sourced = errors;
    let mut errs: Vec<String> = Vec::new();
    let settings = match &loaded.config {
        Some(c) => match c.value.validate(&args.zones) {
            Ok(s) => s,
            Err(e) => {
                let e = crate::source::SourceError::new(c.location.clone(), e.to_string());
                sourced.push(file::at_field_line(&e));
                Default::default()
            }
        },
        None => Default::default(),
    };
    let geo_path = args.geoip.clone().or_else(|| settings.geoip.clone());
    // Named by where the path came from, and told apart from the zones' errors.
    let geo_origin = || match (&args.geoip, &loaded.config) {
        (Some(_), _) => "--geoip".to_string(),
        (None, Some(c)) => format!("{}: spec.geoip", c.location),
        (None, None) => "geoip".to_string(),
    };
    let mut watched = loaded.files.clone();
    watched.extend(geo_path.clone());
    let geo = match &geo_path {
        Some(p) if !p.is_file() => {
            errs.push(format!(
                "{}: {GEOIP_PROBLEM} {} does not exist",
                geo_origin(),
                p.display()
            ));
            None
        }
        Some(p) => match GeoDb::open(p) {
            Ok(g) => Some(Arc::new(g)),
            Err(e) => {
                // `e` names the path and says "GeoIP database" itself.
                errs.push(format!("{}: {e}", geo_origin()));
                None
            }
        },
        None => None,
    };
    let inputs = Inputs {
        zone_files: loaded.zone_files,
        objects: loaded.objects,
        unready: Default::default(),
    };
    // Objects refused by the file source's strict checks are still built here, only so that
    // their other problems are reported too: any error fails the load.
    let (cat, cat_errors) = catalog::build_from(
        &inputs.zone_files,
        &[&inputs.objects, &loaded.refused],
        &inputs.unready,
        &settings,
    );
    sourced.extend(cat_errors.iter().map(file::at_field_line));
    sourced.sort_by_cached_key(file::error_order);
    errs.splice(0..0, sourced.iter().map(|e| e.to_string()));
    if cat.zones.is_empty() && errs.is_empty() && !other_sources {
        errs.push(format!(
            "{}: no zones: add a *.zone file or a Domain object",
            args.zones.display()
        ));
    }
    if !errs.is_empty() {
        return (Err(errs), watched);
    }
    let compiled = match compile::compile(cat, settings.clone()) {
        Ok(c) => c,
        Err(e) => return (Err(vec![e.to_string()]), watched),
    };
    let loaded = Ok(Loaded {
        compiled,
        geo: geo.clone(),
        files: loaded.files,
        inputs: FileInputs {
            zone_files: inputs.zone_files,
            objects: inputs.objects,
            settings,
            geo,
        },
    });
    (loaded, watched)
}

/// Marks the GeoIP database's error among `load`'s, for the summary line.
const GEOIP_PROBLEM: &str = "GeoIP database";

/// The last line after `load`'s errors: the zones' errors counted, a GeoIP problem named apart.
pub fn error_summary(errs: &[String], zones: &std::path::Path) -> String {
    let geo = errs.iter().any(|e| e.contains(GEOIP_PROBLEM));
    let others = errs.len() - usize::from(geo);
    match (others, geo) {
        (0, true) => "the GeoIP database cannot be used".to_string(),
        (n, true) => format!(
            "{n} error(s) in {} and the GeoIP database cannot be used",
            zones.display()
        ),
        (n, false) => format!("{n} error(s) in {}", zones.display()),
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a pod's log or a file are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Check(args) => Ok(check(&args)),
        Command::Serve(args) => {
            init_logging(cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .worker_threads(2)
                .build()?;
            rt.block_on(serve(*args))?;
            Ok(0)
        }
        Command::Explain(args) => explain(args),
        Command::Drain(a) => {
            let client = a.conn.client()?;
            let length = a.duration.map(crate::model::format_duration);
            let mut query = Vec::new();
            if let Some(l) = &length {
                query.push(("for", l.as_str()));
            }
            if let Some(r) = &a.reason {
                query.push(("reason", r.as_str()));
            }
            let records = a.records.join(",");
            if !records.is_empty() {
                query.push(("records", records.as_str()));
            }
            let who = a.who.clone().unwrap_or_else(local_who);
            query.push(("who", who.as_str()));
            let path = format!("api/v1/clusters/{}/drain", a.cluster);
            let reply =
                client_reply(client.call(reqwest::Method::POST, client.url(&path, &query)))?;
            let Some(v) = reply else { return Ok(1) };
            if a.json {
                print_json(&v);
            } else {
                let until = match v["until"].as_f64() {
                    Some(u) => format!("until {}", crate::client::rfc3339(u)),
                    None => "until undrained".to_string(),
                };
                let why = v["reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                let object = v["object"]
                    .as_str()
                    .map(|o| format!(" (Drain {o})"))
                    .unwrap_or_default();
                let scope = if a.records.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", a.records.join(", "))
                };
                println!("drained {}{scope} {until}{why}{object}", a.cluster);
            }
            Ok(0)
        }
        Command::Undrain(a) => {
            let cluster = a
                .cluster
                .ok_or_else(|| anyhow!("undrain needs a cluster name"))?;
            let client = a.conn.client()?;
            let path = format!("api/v1/clusters/{cluster}/drain");
            let who = a.who.clone().unwrap_or_else(local_who);
            let records = a.records.join(",");
            let mut query = vec![("who", who.as_str())];
            if !records.is_empty() {
                query.push(("records", records.as_str()));
            }
            let reply =
                client_reply(client.call(reqwest::Method::DELETE, client.url(&path, &query)))?;
            let Some(v) = reply else { return Ok(1) };
            if a.json {
                print_json(&v);
            } else {
                let deleted: Vec<&str> = v["deleted"]
                    .as_array()
                    .map(|d| d.iter().filter_map(|o| o.as_str()).collect())
                    .unwrap_or_default();
                if deleted.is_empty() {
                    println!("undrained {cluster}");
                } else {
                    println!("undrained {cluster} (deleted Drain {})", deleted.join(", "));
                }
            }
            Ok(0)
        }
        Command::State(a) => {
            let client = a.conn.client()?;
            let reply =
                client_reply(client.call(reqwest::Method::GET, client.url("api/v1/state", &[])))?;
            let Some(v) = reply else { return Ok(1) };
            if a.json {
                print_json(&v);
            } else {
                let _ = write!(std::io::stdout(), "{}", crate::client::state_table(&v));
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "meridian", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// A refusal by the server (4xx/5xx) is the command's answer, printed, exit 1; not reaching it
/// or an unreadable reply is an error.
fn client_reply(r: Result<serde_json::Value, ClientError>) -> Result<Option<serde_json::Value>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ ClientError::Status { .. }) => {
            eprintln!("{e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn print_json(v: &serde_json::Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn check(args: &SourceArgs) -> i32 {
    match load(args) {
        Ok(l) => {
            let c = &l.compiled;
            println!(
                "ok: {} files, {} zones, {} federated names, {} clusters, {} static names{}",
                l.files.len(),
                c.zones.len(),
                c.dyns.len(),
                c.clusters.len(),
                c.nodes.len() - c.dyns.len(),
                l.geo
                    .as_ref()
                    .map(|g| format!(", GeoIP {} ({})", g.path().display(), g.database_type()))
                    .unwrap_or_default()
            );
            0
        }
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            eprintln!("{}", error_summary(&errs, &args.zones));
            1
        }
    }
}

fn explain(args: ExplainArgs) -> Result<i32> {
    if let Some(admin) = &args.admin {
        let client = AdminClient::new(admin, args.admin_token.as_deref())?;
        let client_ip = args.client.to_string();
        let url = client.url(
            "api/v1/explain",
            &[
                ("name", args.name.as_str()),
                ("type", args.qtype.as_str()),
                ("client", client_ip.as_str()),
            ],
        );
        let Some(v) = client_reply(client.call(reqwest::Method::GET, url))? else {
            return Ok(1);
        };
        let e: crate::explain::Explanation =
            serde_json::from_value(v).context("unexpected explain response")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&e)?);
        } else {
            print!("{e}");
        }
        return Ok(0);
    }
    let loaded = match load(&args.source) {
        Ok(l) => l,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            return Ok(1);
        }
    };
    let snap = Snapshot::new(Arc::new(loaded.compiled), loaded.geo);
    let e = crate::explain::explain(&snap, &args.name, &args.qtype, args.client)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{e}");
    }
    Ok(0)
}

/// Lifts the soft open-file limit to the hard one: the TCP connection cap (default 1024) plus
/// sockets, files and probes must fit, and many shells start services with a soft limit of 1024.
pub fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                let old = lim.rlim_cur;
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                    tracing::debug!(from = old, to = lim.rlim_max, "raised the open-file limit");
                }
            }
        }
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let watch = args.watch_interval;
    let idle = args.tcp_idle_timeout;
    let lameduck = args.lameduck;
    // Before anything binds: a misconfigured admin API must not come up even briefly.
    if let Some(problem) = admin::token_problem(&args.admin, args.admin_token.as_deref()) {
        bail!(problem);
    }
    if let Some(n) = &args.nsid
        && (n.is_empty() || n.len() > 255)
    {
        bail!("--nsid: {} octets is outside 1..=255", n.len());
    }
    crate::dns::answer::init_identity(args.nsid.as_deref());
    raise_fd_limit();
    let kube = args.kube.options()?;
    let reload_timeout = args.reload_timeout;
    let started = Instant::now();
    let (loaded, mut watched) = load_watched(&args.source, kube.is_some());
    let loaded = match loaded {
        Ok(l) => l,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            bail!("{}", error_summary(&errs, &args.source.zones));
        }
    };
    tracing::info!(
        zones = loaded.compiled.zones.len(),
        names = loaded.compiled.dyns.len(),
        clusters = loaded.compiled.clusters.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "loaded {}",
        args.source.zones.display()
    );
    match &loaded.geo {
        Some(g) => g.announce(),
        None => GeoDb::announce_none(),
    }
    metrics::get()
        .snapshot_names
        .set(loaded.compiled.nodes.len() as i64);
    let shared: Shared = Arc::new(ArcSwap::from_pointee(Snapshot::new(
        Arc::new(loaded.compiled),
        loaded.geo,
    )));
    let publisher = publisher::start(shared.clone(), loaded.inputs);
    let sharing = !args.peers.is_empty() || args.peers_dns.is_some();
    if sharing {
        publisher.send(publisher::Update::Quorum(publisher::QuorumConfig {
            name: args.nsid.clone().unwrap_or_else(admin::instance_name),
            poll: args.peer_interval,
            stale_intervals: args.peer_stale_intervals,
        }));
    }
    if kube.is_none() {
        // Without Kubernetes, drains are kept in a file; they are in the snapshot before the
        // first query, or a restart would answer with a drained cluster for a moment.
        publisher.send(publisher::Update::DrainsFile(
            args.drains_file
                .clone()
                .unwrap_or_else(|| args.source.zones.join(".meridian-drains.json")),
        ));
        publisher.flush().await;
    }
    let health = HealthStatus::default();
    // Probing starts with the first catalog, before the first query (DESIGN §3).
    let scheduler = crate::health::scheduler::start_with_publisher(&publisher, health.clone());
    scheduler.initial_round_published(&publisher).await;
    let ready = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));

    let workers = args.udp_workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let (udp, tcp) = server::bind_dns(args.listen, workers)
        .with_context(|| format!("cannot bind DNS on {}", args.listen))?;
    let udp_addr = udp[0].local_addr()?;
    let tcp = tokio::net::TcpListener::from_std(tcp)?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot bind admin API on {}", args.admin))?;
    let admin_addr = admin_listener.local_addr()?;

    let stop = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let udp_threads = server::spawn_udp_workers(udp, shared.clone(), stop.clone());
    let tcp_task = tokio::spawn(server::serve_tcp(
        tcp,
        shared.clone(),
        TcpLimits {
            max_connections: args.tcp_max_connections,
            max_per_source: args.tcp_max_per_source,
            idle_timeout: idle,
        },
        shutdown_rx.clone(),
    ));
    // Drains: Drain objects with Kubernetes, else in-process, kept in a file in the zones
    // directory so a restart does not forget them.
    let kube_drains = match &kube {
        Some(opts) => Some(
            kubernetes::drains::DrainApi::new(
                kubernetes::client(opts).await?,
                opts.kubefed_namespace.clone(),
                opts.lease.identity.clone(),
            )
            .keep_expired(opts.drain_keep_expired),
        ),
        None => None,
    };
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            shared: shared.clone(),
            publisher: publisher.clone(),
            ready: ready.clone(),
            stopping: stopping.clone(),
            token: args.admin_token.clone(),
            health: health.clone(),
            kube_drains: kube_drains.clone(),
        },
        shutdown_rx.clone(),
    ));
    let peer_task = sharing.then(|| {
        crate::health::exchange::start(
            args.peers.clone(),
            args.peers_dns.clone(),
            args.peer_interval,
            args.admin_token.clone(),
            publisher.clone(),
            shutdown_rx.clone(),
        )
    });
    if sharing {
        tracing::info!(peers = ?args.peers, peers_dns = args.peers_dns.as_deref().unwrap_or(""), interval_ms = args.peer_interval.as_millis() as u64, "exchanging health observations with peers");
    }
    let kube_enabled = kube.is_some();
    let kube_handle = match kube {
        // Ready once the Kubernetes source has handed over its first complete state.
        Some(opts) => {
            tracing::info!(
                kubeconfig = %opts
                    .kubeconfig
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "in-cluster".to_string()),
                kubefed_namespace = %opts.kubefed_namespace,
                identity = %opts.lease.identity,
                "starting the kubernetes source"
            );
            Some(
                kubernetes::start(
                    opts,
                    publisher.clone(),
                    ready.clone(),
                    shutdown_rx.clone(),
                    kube_drains.clone().ok_or_else(|| anyhow!("no Drain API"))?,
                )
                .await?,
            )
        }
        None => {
            ready.store(true, Ordering::Release);
            None
        }
    };
    // Handlers before "serving": SIGHUP's default action is to exit, and a reload may be asked
    // for as soon as the server says it serves.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(dns = %udp_addr, admin = %admin_addr, udp_workers = workers, "serving");

    let reload_args = args.source.clone();
    // File changes reload like SIGHUP does; polled, so atomic renames and network mounts work.
    let fingerprint =
        |watched: &[PathBuf]| crate::source::watch::fingerprint(&reload_args.zones, watched);
    let mut seen = fingerprint(&watched);
    // Reloads run as a task beside this loop, never inside it: a reload stuck on a file must
    // not keep SIGTERM, SIGHUP or the watcher waiting. One runs at a time; what asks for
    // another meanwhile (SIGHUP, a change) is folded into one more reload after it.
    let start_reload = || {
        tokio::spawn(reload(
            reload_args.clone(),
            kube_enabled,
            publisher.clone(),
            reload_timeout,
        ))
    };
    let mut running: Option<tokio::task::JoinHandle<Option<Vec<PathBuf>>>> = None;
    let mut again = false;
    let mut tick = tokio::time::interval(if watch.is_zero() {
        std::time::Duration::from_secs(3600)
    } else {
        watch
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if running.is_some() {
                    again = true;
                    tracing::info!("SIGHUP during a reload: another reload follows it");
                } else {
                    seen = fingerprint(&watched);
                    running = Some(start_reload());
                }
            }
            _ = tick.tick(), if !watch.is_zero() => {
                let now = fingerprint(&watched);
                if now != seen {
                    seen = now;
                    tracing::info!("files changed in {}", reload_args.zones.display());
                    if running.is_some() {
                        again = true;
                    } else {
                        running = Some(start_reload());
                    }
                }
            }
            done = async {
                match running.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            }, if running.is_some() => {
                running = None;
                if let Ok(Some(files)) = done {
                    // Watch what this reload read (included files come and go). Unless
                    // something changed meanwhile, the new set's fingerprint is the baseline.
                    let unchanged = fingerprint(&watched) == seen;
                    watched = files;
                    if unchanged {
                        seen = fingerprint(&watched);
                    }
                }
                if std::mem::take(&mut again) {
                    seen = fingerprint(&watched);
                    running = Some(start_reload());
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if let Some(task) = running.take() {
        // Its thread may be stuck in a read; nothing waits for it, and exit ends it.
        task.abort();
    }
    // Lame duck: not ready, still answering, until the replica is out of rotation. A second
    // signal cuts it short.
    stopping.store(true, Ordering::Release);
    if !lameduck.is_zero() {
        tracing::info!(
            lameduck_ms = lameduck.as_millis() as u64,
            "lame duck: /readyz fails, DNS still answered"
        );
        tokio::select! {
            _ = tokio::time::sleep(lameduck) => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    tracing::info!("shutting down: no new queries, finishing in-flight TCP");
    ready.store(false, Ordering::Release);
    stop.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    if let Some(k) = kube_handle {
        k.stopped().await;
    }
    scheduler.stop().await;
    // It stops its pollers on shutdown; a poll in flight is cut off at one interval.
    if let Some(t) = peer_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    let _ = tcp_task.await;
    // Idle keep-alive admin connections would hold a graceful shutdown open forever.
    if tokio::time::timeout(std::time::Duration::from_secs(2), admin_task)
        .await
        .is_err()
    {
        tracing::warn!("admin connections still open after 2s; closing them");
    }
    for t in udp_threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Reload threads still running, abandoned ones included: a thread stuck in a read cannot be
/// stopped, so after a few are stuck no more are started (each would likely stick too).
static RELOAD_THREADS: AtomicUsize = AtomicUsize::new(0);
const MAX_RELOAD_THREADS: usize = 4;

struct ReloadThread;

impl Drop for ReloadThread {
    fn drop(&mut self) {
        RELOAD_THREADS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reloads zones, configuration and GeoIP; on any error, or when the reload misses `deadline`,
/// the running state stays. Returns the files the reload read or tried to (for the watcher),
/// None when it did not finish.
pub async fn reload(
    args: SourceArgs,
    other_sources: bool,
    publisher: publisher::PublisherHandle,
    deadline: std::time::Duration,
) -> Option<Vec<PathBuf>> {
    let m = metrics::get();
    let failed = || {
        m.reloads.with_label_values(&["failed"]).inc();
        m.source_errors.with_label_values(&["file"]).inc();
    };
    if RELOAD_THREADS.fetch_add(1, Ordering::AcqRel) >= MAX_RELOAD_THREADS {
        RELOAD_THREADS.fetch_sub(1, Ordering::AcqRel);
        failed();
        tracing::error!(
            stuck = MAX_RELOAD_THREADS,
            "reload refused: earlier reloads are still stuck reading files; still serving the \
             previous state"
        );
        return None;
    }
    // Made here and moved in, so the count drops also when no thread could be started.
    let guard = ReloadThread;
    let args2 = args.clone();
    let work = publisher::off_path("meridian-reload", move || {
        let _guard = guard;
        load_watched(&args2, other_sources)
    });
    let (result, watched) = match tokio::time::timeout(deadline, work).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            failed();
            tracing::error!("reload failed: no thread for it; still serving the previous state");
            return None;
        }
        Err(_) => {
            failed();
            tracing::error!(
                timeout_ms = deadline.as_millis() as u64,
                "reload abandoned: not finished within --reload-timeout {deadline:?} (a file that \
                 never ends, a hung file system?); still serving the previous state"
            );
            return None;
        }
    };
    match result {
        Ok(l) => {
            m.reloads.with_label_values(&["ok"]).inc();
            m.snapshot_names.set(l.compiled.nodes.len() as i64);
            tracing::info!(
                zones = l.compiled.zones.len(),
                names = l.compiled.dyns.len(),
                "reloaded {}",
                args.zones.display()
            );
            match &l.inputs.geo {
                Some(g) => g.announce(),
                None => GeoDb::announce_none(),
            }
            // The publisher serves this compile as it is, or, with other sources, merges the
            // new fragment with theirs and recompiles.
            publisher.send(Update::Files(Box::new(l.inputs), Arc::new(l.compiled)));
        }
        Err(errs) => {
            m.reloads.with_label_values(&["failed"]).inc();
            m.source_errors
                .with_label_values(&["file"])
                .inc_by(errs.len() as u64);
            for e in &errs {
                tracing::error!(error = %e, "reload rejected; still serving the previous state");
            }
        }
    }
    Some(watched)
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
