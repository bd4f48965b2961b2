#!/usr/bin/env bash
# Install the platform unlearnops runs on, at pinned versions, into the current kube context,
# then the unlearnops chart. Idempotent (helm upgrade --install, kubectl apply).
#
#   kind create cluster --config infra/kind-config.yaml && infra/bootstrap.sh
#
# Needs kubectl and helm (v3.8+ for OCI charts). Environment:
#   UNLEARNOPS_VALUES  extra values file for the unlearnops chart (optional)
#   SKIP               space-separated steps to skip: certmanager kfp kuberay kserve s3 mlflow unlearnops
set -euo pipefail

CERT_MANAGER_VERSION=v1.21.1
KFP_VERSION=2.17.0
KUBERAY_VERSION=1.7.0
KSERVE_VERSION=v0.20.0
SEAWEEDFS_CHART_VERSION=4.44.0
MLFLOW_CHART_VERSION=1.11.5

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHART="${HERE}/../charts/unlearnops"
NS=unlearnops
SKIP="${SKIP:-}"

log() { printf '==> %s\n' "$*" >&2; }
skip() { [[ " ${SKIP} " == *" $1 "* ]]; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "bootstrap: $1 is not installed" >&2; exit 2; }; }

install_cert_manager() {
  log "cert-manager ${CERT_MANAGER_VERSION}"
  kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
  kubectl -n cert-manager rollout status deploy/cert-manager-webhook --timeout=300s
}

install_kfp() {
  # env/platform-agnostic keeps the release's image tags (env/dev re-tags them to :master).
  local base="github.com/kubeflow/pipelines/manifests/kustomize"
  log "Kubeflow Pipelines ${KFP_VERSION} (standalone, platform-agnostic)"
  kubectl apply -k "${base}/cluster-scoped-resources?ref=${KFP_VERSION}"
  kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
  kubectl apply -k "${base}/env/platform-agnostic?ref=${KFP_VERSION}"
  kubectl -n kubeflow rollout status deploy/ml-pipeline --timeout=900s
}

install_kuberay() {
  log "KubeRay operator ${KUBERAY_VERSION}"
  helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update >/dev/null
  helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "${KUBERAY_VERSION}" \
    --namespace kuberay --create-namespace --wait
}

install_kserve() {
  # Standard (raw Deployment) mode: no Knative or Istio; the Hugging Face runtime serves the champion.
  local oci=oci://ghcr.io/kserve/charts
  log "KServe ${KSERVE_VERSION} (Standard mode)"
  helm upgrade --install kserve-crd "${oci}/kserve-crd" --version "${KSERVE_VERSION}" \
    --namespace kserve --create-namespace --wait
  helm upgrade --install kserve "${oci}/kserve-resources" --version "${KSERVE_VERSION}" \
    --namespace kserve --set kserve.controller.deploymentMode=Standard --wait
  helm upgrade --install kserve-runtime-configs "${oci}/kserve-runtime-configs" --version "${KSERVE_VERSION}" \
    --namespace kserve --set kserve.servingruntime.huggingfaceserver.enabled=true --wait
}

install_s3() {
  log "SeaweedFS ${SEAWEEDFS_CHART_VERSION} (S3 on :8333)"
  helm repo add seaweedfs https://seaweedfs.github.io/seaweedfs/helm --force-update >/dev/null
  helm upgrade --install seaweedfs seaweedfs/seaweedfs --version "${SEAWEEDFS_CHART_VERSION}" \
    --namespace seaweedfs --create-namespace --set s3.enabled=true --set s3.enableAuth=false --wait
}

install_mlflow() {
  # PostgreSQL backend, artifacts proxied by the server (clients need no S3 credentials),
  # allowed hosts for the in-cluster service names.
  log "MLflow chart ${MLFLOW_CHART_VERSION}"
  helm repo add community-charts https://community-charts.github.io/helm-charts --force-update >/dev/null
  helm upgrade --install mlflow community-charts/mlflow --version "${MLFLOW_CHART_VERSION}" \
    --namespace mlflow --create-namespace \
    --set postgresql.enabled=true \
    --set artifactRoot.proxiedArtifactStorage=true \
    --set artifactRoot.s3.enabled=true --set artifactRoot.s3.bucket=mlflow \
    --set extraEnvVars.MLFLOW_S3_ENDPOINT_URL=http://seaweedfs-s3.seaweedfs.svc.cluster.local:8333 \
    --set "extraArgs.allowed-hosts=mlflow.mlflow.svc.cluster.local:5000\,mlflow.mlflow.svc:5000\,mlflow:5000\,localhost:5000" \
    --wait
}

install_unlearnops() {
  log "unlearnops chart (namespace ${NS})"
  kubectl create namespace "${NS}" --dry-run=client -o yaml | kubectl apply -f -
  local extra=()
  if [[ -n "${UNLEARNOPS_VALUES:-}" ]]; then
    extra=(-f "${UNLEARNOPS_VALUES}")
  fi
  helm upgrade --install unlearnops "${CHART}" --namespace "${NS}" \
    --set rbac.pipelineRunnerNamespace=kubeflow "${extra[@]}" --wait --timeout 15m
}

main() {
  need kubectl
  need helm
  kubectl cluster-info >/dev/null || { echo "bootstrap: no cluster in the current kube context" >&2; exit 2; }
  skip certmanager || install_cert_manager
  skip kfp || install_kfp
  skip kuberay || install_kuberay
  skip kserve || install_kserve
  skip s3 || install_s3
  skip mlflow || install_mlflow
  skip unlearnops || install_unlearnops
  log "done: kubectl -n ${NS} get pods"
}

main "$@"
