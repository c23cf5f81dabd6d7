#!/usr/bin/env bash
# Regenerates the copies of deploy/'s sources of truth; tests/integration/deploy.rs fails when a
# copy differs, naming this script. Run it after editing any of:
#   deploy/monitoring/rules.yaml      -> deploy/monitoring/prometheusrule.yaml (Prometheus Operator)
#                                        deploy/helm/meridian/files/rules.yaml
#   deploy/monitoring/dashboard.json  -> deploy/helm/meridian/files/dashboard.json
#   deploy/crds/*.yaml                -> deploy/helm/meridian/crds/
#   deploy/components/external-dns-crd/externaldns.k8s.io_dnsendpoints.yaml
#                                     -> deploy/helm/meridian/files/
# (Helm reads files only from inside the chart, hence copies rather than references.)
set -euo pipefail
cd "$(dirname "$0")"
chart=helm/meridian

{
    echo "# GENERATED from rules.yaml by sync.sh: edit rules.yaml, then run deploy/sync.sh."
    echo "apiVersion: monitoring.coreos.com/v1"
    echo "kind: PrometheusRule"
    echo "metadata:"
    echo "  name: meridian"
    echo "  namespace: meridian"
    echo "spec:"
    grep -v '^#' monitoring/rules.yaml | sed 's/^/  /'
} >monitoring/prometheusrule.yaml

cp monitoring/rules.yaml "$chart/files/rules.yaml"
cp monitoring/dashboard.json "$chart/files/dashboard.json"
cp components/external-dns-crd/externaldns.k8s.io_dnsendpoints.yaml "$chart/files/"
rm -f "$chart"/crds/*.yaml
cp crds/*.yaml "$chart/crds/"
echo "deploy/sync.sh: copies regenerated" >&2
