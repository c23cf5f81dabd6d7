//! Member clusters, read directly with the credentials their `KubeFedCluster` and Secret give
//! (no agent in the member, as in the KubeSphere host/member model). Per member, four watches:
//! Services, EndpointSlices (readiness), Ingresses and node metadata (topology labels).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use thiserror::Error;
use tokio::sync::Notify;

use super::status::Observation;
use super::watch::{self, Watch};
use crate::model::{KubeFedCluster, LoadBalancerIngress, LoadBalancerStatus};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MemberError {
    #[error("spec.apiEndpoint: missing")]
    NoEndpoint,
    #[error("spec.secretRef: missing (the Secret holds the member's token)")]
    NoSecretRef,
    #[error("Secret {0}: not found")]
    SecretMissing(String),
    #[error("Secret {0}: data.token missing")]
    NoToken(String),
    #[error("client configuration: {0}")]
    Config(String),
}

/// Everything that decides how to reach a member; a change restarts its watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub api_endpoint: String,
    /// Base64 PEM bundle (kubeconfig's `certificate-authority-data`).
    pub ca_data: Option<String>,
    pub token: String,
    /// `spec.disabledTLSValidations: ["*"]`.
    pub insecure: bool,
}

impl MemberSpec {
    /// Reads KubeFed's layout: `spec.apiEndpoint`, `spec.caBundle` (else the Secret's `ca.crt`),
    /// the Secret's `token`.
    pub fn from_cluster(
        c: &KubeFedCluster,
        secret: impl Fn(&str) -> Option<Arc<Secret>>,
    ) -> Result<MemberSpec, MemberError> {
        if c.spec.api_endpoint.trim().is_empty() {
            return Err(MemberError::NoEndpoint);
        }
        let secret_name = c
            .spec
            .secret_ref
            .as_ref()
            .map(|r| r.name.clone())
            .ok_or(MemberError::NoSecretRef)?;
        let s =
            secret(&secret_name).ok_or_else(|| MemberError::SecretMissing(secret_name.clone()))?;
        let data = s.data.clone().unwrap_or_default();
        let token = data
            .get("token")
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| MemberError::NoToken(secret_name.clone()))?;
        // caBundle is Go []byte: base64 in JSON, which is what kubeconfig wants as well.
        let ca_data = c
            .spec
            .ca_bundle
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| {
                data.get("ca.crt")
                    .filter(|b| !b.0.is_empty())
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(&b.0))
            });
        let insecure = c
            .spec
            .disabled_tls_validations
            .iter()
            .flatten()
            .any(|v| v == "*");
        Ok(MemberSpec {
            api_endpoint: c.spec.api_endpoint.trim().to_string(),
            ca_data,
            token,
            insecure,
        })
    }

    /// A kube client configuration, through kubeconfig so PEM parsing and TLS setup are kube's.
    pub async fn client(&self, name: &str) -> Result<kube::Client, MemberError> {
        let mut cluster = serde_json::json!({ "server": self.api_endpoint });
        if let Some(ca) = &self.ca_data {
            cluster["certificate-authority-data"] = ca.clone().into();
        }
        if self.insecure {
            cluster["insecure-skip-tls-verify"] = true.into();
        }
        let kc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": name, "cluster": cluster }],
            "users": [{ "name": name, "user": { "token": self.token } }],
            "contexts": [{ "name": name, "context": { "cluster": name, "user": name } }],
            "current-context": name,
        });
        let kc: Kubeconfig =
            serde_json::from_value(kc).map_err(|e| MemberError::Config(e.to_string()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| MemberError::Config(e.to_string()))?;
        // A member that stops answering must be noticed in seconds, not minutes.
        config.connect_timeout = Some(Duration::from_secs(5));
        kube::Client::try_from(config).map_err(|e| MemberError::Config(e.to_string()))
    }
}

/// Whether a member's view can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Not yet listed, and not yet failing for long: wait before writing anything about it.
    Pending,
    Online,
    /// Failing (or never listed) for longer than the grace period: KubeFed's "offline".
    Offline,
}

pub struct Member {
    pub spec: MemberSpec,
    started: Instant,
    services: Watch<Service>,
    slices: Watch<EndpointSlice>,
    ingresses: Watch<Ingress>,
    nodes: Watch<PartialObjectMeta<Node>>,
}

impl Member {
    pub async fn connect(
        name: &str,
        spec: MemberSpec,
        dirty: Arc<Notify>,
    ) -> Result<Member, MemberError> {
        let client = spec.client(name).await?;
        let w = |kind: &str| format!("member {name} {kind}");
        let cfg = watcher::Config::default();
        Ok(Member {
            spec,
            started: Instant::now(),
            // Kept: name, namespace and status (the load balancer).
            services: watch::spawn_trimmed(
                Api::all(client.clone()),
                cfg.clone(),
                (),
                w("Service"),
                dirty.clone(),
                |s: &mut Service| {
                    trim_meta(&mut s.metadata);
                    s.spec = None;
                },
            ),
            // Only slices that belong to a Service matter, and of them only readiness.
            slices: watch::spawn_trimmed(
                Api::all(client.clone()),
                cfg.clone().labels("kubernetes.io/service-name"),
                (),
                w("EndpointSlice"),
                dirty.clone(),
                |s: &mut EndpointSlice| {
                    trim_meta(&mut s.metadata);
                    s.ports = None;
                    for e in &mut s.endpoints {
                        e.addresses.clear();
                        e.deprecated_topology = None;
                        e.hints = None;
                        e.target_ref = None;
                    }
                },
            ),
            ingresses: watch::spawn_trimmed(
                Api::all(client.clone()),
                cfg.clone(),
                (),
                w("Ingress"),
                dirty.clone(),
                |i: &mut Ingress| {
                    trim_meta(&mut i.metadata);
                    i.spec = None;
                },
            ),
            // Metadata only: labels are all that is needed of a node.
            nodes: watch::spawn(
                Api::<PartialObjectMeta<Node>>::all(client),
                cfg,
                (),
                w("Node"),
                dirty,
            ),
        })
    }

    fn states(&self) -> [&watch::WatchState; 4] {
        [
            &self.services.state,
            &self.slices.state,
            &self.ingresses.state,
            &self.nodes.state,
        ]
    }

    pub fn state(&self, offline_after: Duration) -> MemberState {
        let states = self.states();
        let failing_long = states
            .iter()
            .filter_map(|s| s.failing_since())
            .any(|t| t.elapsed() >= offline_after);
        let synced = states.iter().all(|s| s.synced());
        if failing_long {
            MemberState::Offline
        } else if synced {
            MemberState::Online
        } else if self.started.elapsed() >= offline_after {
            MemberState::Offline
        } else {
            MemberState::Pending
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.states().iter().find_map(|s| s.last_error())
    }

    /// Region and zones from node labels: the most common region, and every zone in it.
    pub fn topology(&self) -> (Option<String>, Vec<String>) {
        let labels: Vec<BTreeMap<String, String>> = self
            .nodes
            .store
            .state()
            .iter()
            .map(|n| n.metadata.labels.clone().unwrap_or_default())
            .collect();
        topology_from_labels(&labels)
    }

    /// (namespace, service) pairs with a ready endpoint in some EndpointSlice.
    pub fn ready_services(&self) -> HashSet<(String, String)> {
        let mut out = HashSet::new();
        for s in self.slices.store.state() {
            let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            else {
                continue;
            };
            // A nil `ready` is an unknown state, which consumers should take as ready.
            if s.endpoints
                .iter()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            {
                out.insert((
                    s.metadata.namespace.clone().unwrap_or_default(),
                    svc.clone(),
                ));
            }
        }
        out
    }

    pub fn service(
        &self,
        ns: &str,
        name: &str,
        ready: &HashSet<(String, String)>,
    ) -> Option<Observation> {
        let svc = self.services.store.get(&ObjectRef::new(name).within(ns))?;
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|v| {
                v.iter()
                    .map(|i| LoadBalancerIngress {
                        ip: i.ip.clone(),
                        hostname: i.hostname.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Observation {
            load_balancer: LoadBalancerStatus { ingress },
            ready: ready.contains(&(ns.to_string(), name.to_string())),
        })
    }

    pub fn ingress(&self, ns: &str, name: &str) -> Option<Observation> {
        let ing = self.ingresses.store.get(&ObjectRef::new(name).within(ns))?;
        let ingress = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|v| {
                v.iter()
                    .map(|i| LoadBalancerIngress {
                        ip: i.ip.clone(),
                        hostname: i.hostname.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Observation {
            load_balancer: LoadBalancerStatus { ingress },
            ready: true,
        })
    }
}

/// Drops what no member lookup reads (labels stay: slices are found by theirs).
fn trim_meta(m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
}

const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";
const LEGACY_REGION: &str = "failure-domain.beta.kubernetes.io/region";
const LEGACY_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";

/// The GA labels win over the legacy ones on each node.
pub fn topology_from_labels(nodes: &[BTreeMap<String, String>]) -> (Option<String>, Vec<String>) {
    let mut regions: HashMap<&str, usize> = HashMap::new();
    let mut zones: Vec<(&str, &str)> = Vec::new();
    for l in nodes {
        let region = l.get(REGION).or_else(|| l.get(LEGACY_REGION));
        let zone = l.get(ZONE).or_else(|| l.get(LEGACY_ZONE));
        if let Some(r) = region.filter(|r| !r.is_empty()) {
            *regions.entry(r).or_default() += 1;
            if let Some(z) = zone.filter(|z| !z.is_empty()) {
                zones.push((r, z));
            }
        }
    }
    // Most nodes, then the name: deterministic.
    let region = regions
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(r, _)| r.to_string());
    let mut zs: Vec<String> = zones
        .iter()
        .filter(|(r, _)| Some(*r) == region.as_deref())
        .map(|(_, z)| z.to_string())
        .collect();
    zs.sort();
    zs.dedup();
    (region, zs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topology_prefers_ga_labels_and_majority_region() {
        let nodes = vec![
            labels(&[
                (REGION, "us-east1"),
                (ZONE, "us-east1-b"),
                (LEGACY_REGION, "old"),
            ]),
            labels(&[(LEGACY_REGION, "us-east1"), (LEGACY_ZONE, "us-east1-c")]),
            labels(&[(REGION, "eu-west1"), (ZONE, "eu-west1-a")]),
            labels(&[]),
        ];
        assert_eq!(
            topology_from_labels(&nodes),
            (
                Some("us-east1".into()),
                vec!["us-east1-b".into(), "us-east1-c".into()]
            )
        );
        assert_eq!(topology_from_labels(&[]), (None, vec![]));
    }

    #[test]
    fn spec_from_kubefed_cluster_and_secret() {
        use k8s_openapi::ByteString;
        let mut c = KubeFedCluster::default();
        c.spec.api_endpoint = "https://127.0.0.1:6443".into();
        assert_eq!(
            MemberSpec::from_cluster(&c, |_| None),
            Err(MemberError::NoSecretRef)
        );
        c.spec.secret_ref = Some(crate::model::LocalSecretReference {
            name: "east".into(),
        });
        assert_eq!(
            MemberSpec::from_cluster(&c, |_| None),
            Err(MemberError::SecretMissing("east".into()))
        );
        let secret = Arc::new(Secret {
            data: Some(
                [
                    ("token".to_string(), ByteString(b"abc\n".to_vec())),
                    ("ca.crt".to_string(), ByteString(b"PEM".to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let spec = MemberSpec::from_cluster(&c, |_| Some(secret.clone())).expect("spec");
        assert_eq!(spec.token, "abc");
        assert_eq!(spec.ca_data.as_deref(), Some("UEVN"));
        assert!(!spec.insecure);
    }
}
