//! The admin API's one client, shared by `drain`, `undrain`, `state` and `explain --admin`
//! (blocking) and by the replicas polling each other's health observations (async,
//! `health::exchange`): one way to name the server (`ADDR:PORT` as `serve --admin` takes it, or
//! a URL), one way to send the token, one way to report errors; and `state`'s table for people.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::health::exchange::WireView;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--admin {0:?}: expected ADDR:PORT (e.g. 127.0.0.1:9153) or an http(s) URL")]
    Address(String),
    #[error("cannot reach the admin API at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {body}")]
    Status { status: u16, body: String },
    #[error("unexpected answer from {url}: {detail}")]
    Body { url: String, detail: String },
    #[error("cannot start the client runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// `ADDR:PORT` or `http://ADDR:PORT[/]` → the address `serve --admin` binds.
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    let bare = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    bare.parse().map_err(|_| {
        format!("expected ADDR:PORT (e.g. 127.0.0.1:9153) or http://ADDR:PORT, got {s:?}")
    })
}

/// `ADDR:PORT`, `HOST:PORT` or an http(s) URL → the API's base URL.
pub fn base_url(s: &str) -> Result<Url, ClientError> {
    let s = s.trim();
    let text = if s.contains("://") {
        s.to_string()
    } else {
        format!("http://{s}")
    };
    let url = Url::parse(&text).map_err(|_| ClientError::Address(s.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ClientError::Address(s.to_string()));
    }
    Ok(url)
}

pub struct AdminClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of its own, for a command: one request, 30 s at most.
    pub fn new(admin: &str, token: Option<&str>) -> Result<AdminClient, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(ClientError::Http)?;
        AdminClient::with_http(admin, token, http)
    }

    /// Over a shared HTTP client (its timeouts and connection pool), as the peers' pollers use.
    pub fn with_http(
        admin: &str,
        token: Option<&str>,
        http: reqwest::Client,
    ) -> Result<AdminClient, ClientError> {
        Ok(AdminClient {
            base: base_url(admin)?,
            token: token.map(str::to_string),
            http,
        })
    }

    /// `path` below the base (`api/v1/state`), with query pairs encoded.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}/{path}"));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One request; the JSON body of a 2xx answer, else the server's error.
    pub async fn fetch<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
    ) -> Result<T, ClientError> {
        let mut req = self.http.request(method, url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            source: e,
        })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(ClientError::Status {
                status: status.as_u16(),
                body: msg,
            });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Body {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    /// [`AdminClient::fetch`] for the commands, which run no runtime of their own.
    pub fn call(&self, method: Method, url: Url) -> Result<Value, ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(self.fetch(method, url))
    }
}

/// The API's endpoints, one method each: the paths live here and nowhere else.
impl AdminClient {
    /// `POST api/v1/clusters/{cluster}/drain`; `length` as `--for` takes it; `records`
    /// (`namespace/name`s) scope it, empty: the whole cluster.
    pub fn drain(
        &self,
        cluster: &str,
        records: &[String],
        length: Option<&str>,
        reason: Option<&str>,
        who: &str,
    ) -> Result<Value, ClientError> {
        let mut query = Vec::new();
        if let Some(l) = length {
            query.push(("for", l));
        }
        if let Some(r) = reason {
            query.push(("reason", r));
        }
        let records = records.join(",");
        if !records.is_empty() {
            query.push(("records", records.as_str()));
        }
        query.push(("who", who));
        let path = format!("api/v1/clusters/{cluster}/drain");
        self.call(Method::POST, self.url(&path, &query))
    }

    /// `DELETE api/v1/clusters/{cluster}/drain`: every drain of the cluster, or with
    /// `records` those scoped to any of them.
    pub fn undrain(
        &self,
        cluster: &str,
        records: &[String],
        who: &str,
    ) -> Result<Value, ClientError> {
        let path = format!("api/v1/clusters/{cluster}/drain");
        let records = records.join(",");
        let mut query = vec![("who", who)];
        if !records.is_empty() {
            query.push(("records", records.as_str()));
        }
        self.call(Method::DELETE, self.url(&path, &query))
    }

    /// `GET api/v1/state`.
    pub fn state(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, self.url("api/v1/state", &[]))
    }

    /// `GET api/v1/observations`: a peer's health observations (async: the server polls).
    pub async fn observations(&self) -> Result<WireView, ClientError> {
        self.fetch(Method::GET, self.url("api/v1/observations", &[]))
            .await
    }

    /// `GET api/v1/explain`: the answer `client` gets for `name`/`qtype`, and why.
    pub fn explain(&self, name: &str, qtype: &str, client: &str) -> Result<Value, ClientError> {
        let query = [("name", name), ("type", qtype), ("client", client)];
        self.call(Method::GET, self.url("api/v1/explain", &query))
    }
}

/// Unix seconds → RFC 3339 (UTC, whole seconds).
pub fn rfc3339(t: f64) -> String {
    jiff::Timestamp::from_second(t as i64)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("{t}"))
}

/// "in 9m", "3s ago": the distance from now, for drains and probe results.
fn relative(t: f64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let d = t - now;
    let s = d.abs().round() as u64;
    let span = if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    };
    if d >= 0.0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Column-aligned rows (the first is the header).
fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// `meridian state` for people: the snapshot, clusters, endpoints and drains of
/// `GET /api/v1/state`, with RFC 3339 times.
pub fn state_table(v: &Value) -> String {
    let mut out = String::new();
    let zones: Vec<&str> = v["zones"]
        .as_array()
        .map(|z| z.iter().map(s).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "instance {}  snapshot {} published {}",
        v["instance"].as_str().unwrap_or("?"),
        v["generation"],
        v["published"].as_f64().map(rfc3339).unwrap_or_default()
    );
    let _ = writeln!(out, "zones    {}", zones.join(", "));
    let g = &v["geoip"];
    match g.is_object() {
        true => {
            let _ = writeln!(
                out,
                "geoip    {} ({}, built {})",
                s(&g["path"]),
                s(&g["type"]),
                g["buildEpoch"].as_f64().map(rfc3339).unwrap_or_default()
            );
        }
        false => {
            let _ = writeln!(out, "geoip    none (clients are not located)");
        }
    }
    let endpoints = v["endpoints"].as_array().cloned().unwrap_or_default();
    let mut rows = vec![vec![
        "CLUSTER".to_string(),
        "REGION".into(),
        "ZONES".into(),
        "HEALTH".into(),
        "DRAINED".into(),
    ]];
    for c in v["clusters"].as_array().into_iter().flatten() {
        let name = s(&c["name"]);
        let eps: Vec<&Value> = endpoints
            .iter()
            .filter(|e| {
                e["clusters"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| s(x) == name))
                    && e["probe"]["kind"].as_str().is_some_and(|k| k != "none")
            })
            .collect();
        let up = eps.iter().filter(|e| e["up"] == true).count();
        let health = match (eps.len(), up) {
            (0, _) => "not probed".to_string(),
            (n, u) if u == n => format!("healthy ({u}/{n} up)"),
            (n, 0) => format!("down (0/{n} up)"),
            (n, u) => format!("degraded ({u}/{n} up)"),
        };
        let drained = if c["drained"] == true {
            match c["drained_until"].as_f64() {
                Some(u) => format!("until {} ({})", rfc3339(u), relative(u)),
                None => "until undrained".to_string(),
            }
        } else {
            "-".to_string()
        };
        let zones: Vec<&str> = c["zones"]
            .as_array()
            .map(|z| z.iter().map(s).collect())
            .unwrap_or_default();
        rows.push(vec![
            name.to_string(),
            c["region"].as_str().unwrap_or("-").to_string(),
            if zones.is_empty() {
                "-".to_string()
            } else {
                zones.join(",")
            },
            health,
            drained,
        ]);
    }
    out.push('\n');
    table(&mut out, &rows);

    let mut rows = vec![vec![
        "ENDPOINT".to_string(),
        "PROBE".into(),
        "CLUSTERS".into(),
        "STATE".into(),
        "SINCE".into(),
        "LAST RESULT".into(),
    ]];
    for e in &endpoints {
        let kind = e["probe"]["kind"].as_str().unwrap_or("?");
        if kind == "none" {
            continue;
        }
        let clusters: Vec<&str> = e["clusters"]
            .as_array()
            .map(|c| c.iter().map(s).collect())
            .unwrap_or_default();
        let r = &e["lastResult"];
        let last = match r.is_object() {
            true => {
                let mut t = if r["ok"] == true { "ok" } else { "failed" }.to_string();
                if let Some(ms) = r["latencyMs"].as_f64() {
                    let _ = write!(t, " {ms:.1} ms");
                }
                if let Some(at) = r["at"].as_f64() {
                    let _ = write!(t, " at {}", rfc3339(at));
                }
                if let Some(err) = r["error"].as_str() {
                    let _ = write!(t, ": {err}");
                }
                t
            }
            false => "no result yet".to_string(),
        };
        rows.push(vec![
            s(&e["address"]).to_string(),
            format!("{kind}:{}", e["probe"]["port"]),
            clusters.join(","),
            if e["up"] == true { "up" } else { "down" }.to_string(),
            e["since"].as_f64().map(rfc3339).unwrap_or("-".into()),
            last,
        ]);
    }
    out.push('\n');
    if rows.len() > 1 {
        table(&mut out, &rows);
    } else {
        let _ = writeln!(out, "no probed endpoints");
    }

    out.push('\n');
    let drains = v["drains"].as_object().cloned().unwrap_or_default();
    if drains.is_empty() {
        let _ = writeln!(out, "no drains");
    } else {
        let mut rows = vec![vec![
            "DRAIN".to_string(),
            "SINCE".into(),
            "EXPIRES".into(),
            "REASON".into(),
            "BY".into(),
        ]];
        for (c, d) in &drains {
            rows.push(vec![
                c.clone(),
                d["since"].as_f64().map(rfc3339).unwrap_or_default(),
                match d["until"].as_f64() {
                    Some(u) => format!("{} ({})", rfc3339(u), relative(u)),
                    None => "never (until undrained)".to_string(),
                },
                d["reason"].as_str().unwrap_or("-").to_string(),
                d["requestedBy"].as_str().unwrap_or("-").to_string(),
            ]);
        }
        table(&mut out, &rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_and_urls_name_the_same_server() {
        for a in [
            "127.0.0.1:9153",
            "http://127.0.0.1:9153",
            "http://127.0.0.1:9153/",
        ] {
            assert_eq!(
                base_url(a).expect(a).as_str(),
                "http://127.0.0.1:9153/",
                "{a}"
            );
            assert_eq!(
                parse_bind(a),
                Ok("127.0.0.1:9153".parse().expect("addr")),
                "{a}"
            );
        }
        assert_eq!(
            base_url("[::1]:9153").expect("v6").as_str(),
            "http://[::1]:9153/"
        );
        assert!(base_url("ftp://x:1").is_err());
        assert!(parse_bind("localhost").is_err());
        let c = AdminClient::new("https://meridian.example:8443/admin", None).expect("url");
        assert_eq!(
            c.url("api/v1/clusters/a b/drain", &[("reason", "x&y")])
                .as_str(),
            "https://meridian.example:8443/admin/api/v1/clusters/a%20b/drain?reason=x%26y"
        );
    }

    #[test]
    fn state_table_lists_clusters_endpoints_and_drains_with_rfc3339_times() {
        let v = serde_json::json!({
            "instance": "pod-a", "generation": 7, "published": 1_700_000_000.0,
            "zones": ["gslb.example.com."],
            "geoip": {"path": "/g.mmdb", "type": "GeoIP2-City", "buildEpoch": 1_704_067_200},
            "clusters": [
                {"name": "east", "region": "us-east", "zones": ["a"], "drained": false},
                {"name": "west", "region": null, "zones": [], "drained": true,
                 "drained_until": 4_000_000_000.0}
            ],
            "endpoints": [
                {"address": "127.0.0.1", "probe": {"kind": "http", "port": 8080}, "up": true,
                 "clusters": ["east"], "since": 1_700_000_000.0,
                 "lastResult": {"ok": true, "latencyMs": 1.5, "at": 1_700_000_001.0}},
                {"address": "127.0.0.2", "probe": {"kind": "none", "port": 0}, "up": true,
                 "clusters": ["west"]}
            ],
            "drains": {"west": {"since": 1_700_000_000.0, "until": 4_000_000_000.0,
                                "reason": "drill"}}
        });
        let t = state_table(&v);
        assert!(
            t.contains("snapshot 7 published 2023-11-14T22:13:20Z"),
            "{t}"
        );
        assert!(t.contains("built 2024-01-01T00:00:00Z"), "{t}");
        let east = t.lines().find(|l| l.starts_with("east ")).expect(&t);
        assert!(
            east.contains("healthy (1/1 up)") && east.ends_with('-'),
            "{east}"
        );
        let west = t.lines().find(|l| l.starts_with("west ")).expect(&t);
        assert!(
            west.contains("not probed") && west.contains("until 2096-"),
            "{west}"
        );
        assert!(t.contains("ok 1.5 ms at 2023-11-14T22:13:21Z"), "{t}");
        assert!(
            !t.contains("127.0.0.2"),
            "unprobed endpoints are left out: {t}"
        );
        let drain = t
            .lines()
            .find(|l| l.starts_with("west  ") && l.contains("drill"));
        assert!(drain.is_some(), "{t}");
    }
}
