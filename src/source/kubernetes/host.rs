//! The host cluster: watches of KubeFed's MultiClusterDNS kinds, external-dns' DNSEndpoint, the
//! KubeFedClusters and the Secrets they reference, and the decoding of those objects into the
//! shared model (serde types, not kube-derived ones, so files and the API read the same way).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher;
use tokio::sync::Notify;

use super::KUBERNETES_LOCATION;
use super::watch::{self, Watch, WatchState};
use crate::metrics;
use crate::model::Object;
use crate::source::typed;

/// The kinds read from the host, with their API resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Domain,
    ServiceRecord,
    IngressRecord,
    Endpoint,
    ExternalEndpoint,
    Cluster,
}

impl Kind {
    pub fn resource(self) -> ApiResource {
        let (g, v, k, plural) = match self {
            Kind::Domain => (
                "multiclusterdns.kubefed.io",
                "v1alpha1",
                "Domain",
                "domains",
            ),
            Kind::ServiceRecord => (
                "multiclusterdns.kubefed.io",
                "v1alpha1",
                "ServiceDNSRecord",
                "servicednsrecords",
            ),
            Kind::IngressRecord => (
                "multiclusterdns.kubefed.io",
                "v1alpha1",
                "IngressDNSRecord",
                "ingressdnsrecords",
            ),
            Kind::Endpoint => (
                "multiclusterdns.kubefed.io",
                "v1alpha1",
                "DNSEndpoint",
                "dnsendpoints",
            ),
            Kind::ExternalEndpoint => (
                "externaldns.k8s.io",
                "v1alpha1",
                "DNSEndpoint",
                "dnsendpoints",
            ),
            Kind::Cluster => (
                "core.kubefed.io",
                "v1beta1",
                "KubeFedCluster",
                "kubefedclusters",
            ),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Domain => "Domain",
            Kind::ServiceRecord => "ServiceDNSRecord",
            Kind::IngressRecord => "IngressDNSRecord",
            Kind::Endpoint => "DNSEndpoint",
            Kind::ExternalEndpoint => "DNSEndpoint (externaldns.k8s.io)",
            Kind::Cluster => "KubeFedCluster",
        }
    }
}

pub struct Host {
    pub client: kube::Client,
    pub domains: Watch<DynamicObject>,
    pub service_records: Watch<DynamicObject>,
    pub ingress_records: Watch<DynamicObject>,
    pub endpoints: Watch<DynamicObject>,
    pub external_endpoints: Watch<DynamicObject>,
    pub clusters: Watch<DynamicObject>,
    pub secrets: Watch<Secret>,
}

impl Host {
    /// Starts every host watch. KubeFedClusters and their Secrets are read only in the KubeFed
    /// namespace (where KubeFed keeps them), so meridian needs no cluster-wide Secret access.
    pub fn start(client: kube::Client, kubefed_namespace: &str, dirty: Arc<Notify>) -> Host {
        let all = |k: Kind| {
            let ar = k.resource();
            watch::spawn(
                Api::<DynamicObject>::all_with(client.clone(), &ar),
                watcher::Config::default(),
                ar,
                format!("host {}", k.label()),
                dirty.clone(),
            )
        };
        let cluster_ar = Kind::Cluster.resource();
        Host {
            domains: all(Kind::Domain),
            service_records: all(Kind::ServiceRecord),
            ingress_records: all(Kind::IngressRecord),
            endpoints: all(Kind::Endpoint),
            external_endpoints: all(Kind::ExternalEndpoint),
            clusters: watch::spawn(
                Api::<DynamicObject>::namespaced_with(
                    client.clone(),
                    kubefed_namespace,
                    &cluster_ar,
                ),
                watcher::Config::default(),
                cluster_ar,
                "host KubeFedCluster".to_string(),
                dirty.clone(),
            ),
            secrets: watch::spawn(
                Api::namespaced(client.clone(), kubefed_namespace),
                watcher::Config::default(),
                (),
                "host Secret".to_string(),
                dirty,
            ),
            client,
        }
    }

    pub fn states(&self) -> [&WatchState; 7] {
        [
            &self.domains.state,
            &self.service_records.state,
            &self.ingress_records.state,
            &self.endpoints.state,
            &self.external_endpoints.state,
            &self.clusters.state,
            &self.secrets.state,
        ]
    }

    pub fn synced(&self) -> bool {
        self.states().iter().all(|s| s.synced())
    }

    pub fn failing(&self) -> bool {
        self.states().iter().any(|s| s.failing_since().is_some())
    }
}

/// Location of a Kubernetes object in errors and logs.
pub fn location(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{KUBERNETES_LOCATION} ({kind} {ns}/{name})"),
        None => format!("{KUBERNETES_LOCATION} ({kind} {name})"),
    }
}

struct Cached {
    resource_version: Option<String>,
    decoded: Option<Object>,
    /// The last version that decoded: served while a newer one is invalid.
    last_good: Option<Object>,
}

/// Decodes objects once per resourceVersion; an invalid object is logged and counted once and
/// its last good version, if any, keeps being served.
#[derive(Default)]
pub struct Decoder {
    cache: HashMap<(Kind, String, String), Cached>,
    seen: HashSet<(Kind, String, String)>,
}

fn to_object(kind: Kind, obj: &DynamicObject) -> Result<Object, String> {
    let v = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    Ok(match kind {
        Kind::Domain => Object::Domain(typed(v)?),
        Kind::ServiceRecord => Object::ServiceDNSRecord(typed(v)?),
        Kind::IngressRecord => Object::IngressDNSRecord(typed(v)?),
        Kind::Endpoint | Kind::ExternalEndpoint => Object::DNSEndpoint(typed(v)?),
        Kind::Cluster => Object::KubeFedCluster(typed(v)?),
    })
}

impl Decoder {
    /// Starts a pass: objects not decoded again before [`Decoder::end_pass`] are forgotten.
    pub fn begin_pass(&mut self) {
        self.seen.clear();
    }

    pub fn end_pass(&mut self) {
        let seen = &self.seen;
        self.cache.retain(|k, _| seen.contains(k));
    }

    pub fn decode(&mut self, kind: Kind, obj: &DynamicObject) -> Option<Object> {
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let key = (kind, ns, name);
        self.seen.insert(key.clone());
        let rv = obj.metadata.resource_version.clone();
        if let Some(c) = self.cache.get(&key)
            && c.resource_version == rv
        {
            return c.decoded.clone().or_else(|| c.last_good.clone());
        }
        let last_good = self
            .cache
            .get(&key)
            .and_then(|c| c.decoded.clone().or(c.last_good.clone()));
        let decoded = match to_object(kind, obj) {
            Ok(o) => Some(o),
            Err(e) => {
                let loc = location(kind.label(), obj.metadata.namespace.as_deref(), &key.2);
                tracing::warn!(
                    object = %loc,
                    error = %e,
                    kept_previous = last_good.is_some(),
                    "invalid Kubernetes object skipped"
                );
                metrics::get()
                    .source_errors
                    .with_label_values(&["kubernetes"])
                    .inc();
                None
            }
        };
        let out = decoded.clone().or_else(|| last_good.clone());
        self.cache.insert(
            key,
            Cached {
                resource_version: rv,
                decoded,
                last_good,
            },
        );
        out
    }
}
