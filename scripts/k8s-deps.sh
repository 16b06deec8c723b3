#!/usr/bin/env bash
# The Kubernetes target's tools, for `ckbpool deploy --target k8s` and its tests (tests/support/k8s.py):
#
#   $CKBPOOL_CACHE/bin/helm            go install helm.sh/helm/v4/cmd/helm@HELM_VERSION
#   $CKBPOOL_CACHE/bin/kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#                                      go build k8s.io/kubernetes/cmd/<name>@K8S_VERSION, through a wrapper
#                                      module: k8s.io/kubernetes's go.mod replaces its k8s.io/* staging modules
#                                      with ./staging/..., which the module zip does not hold, so the wrapper
#                                      replaces each with its published v0.<minor>.<patch> instead
#   $CKBPOOL_CACHE/bin/coredns         CoreDNS COREDNS_VERSION with six plugins (the one-node cluster's DNS)
#   /usr/bin/etcd                      Debian's etcd-server (kube-apiserver's storage)
#
# Cold cost, measured on 2 cores (docs/k8s.md): helm ~220 CPU-seconds, kube-apiserver ~510 and then the
# controller-manager + scheduler ~190 more, 3.2 GB peak RSS -- some 8 minutes of 2 cores beside the ckb build in
# `make deps`' parallel block, plus ~30 for the kubelet and kube-proxy and ~85 for CoreDNS on a warm build cache.
# Built by default: on a cold cache they end `make deps` ~5.5 min after the ckb build (2,137 s in all, measured;
# docs/k8s.md), a cold CI run ~63 min -- under its 90-minute bound.
# CKBPOOL_K8S_APISERVER=0 skips them on a machine that does not want the Go builds (binaries already cached are
# kept); the API-server tests then skip, naming this step. Idempotent: binaries built from the pinned versions
# (read back with `go version -m`) are kept, so a warm cache costs well under a second.
# Without a Go toolchain the step says so and succeeds: the k8s tests then skip.
set -euo pipefail
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
HELM_VERSION="${CKBPOOL_HELM_VERSION:-v4.3.2}"
K8S_VERSION="${CKBPOOL_K8S_VERSION:-v1.37.2}"
COREDNS_VERSION="${CKBPOOL_COREDNS_VERSION:-v1.15.0}"
WANT_APISERVER="${CKBPOOL_K8S_APISERVER:-1}"
mkdir -p "$CACHE/bin" "$CACHE/logs"
start=$SECONDS

say() { echo "k8s-deps: $*"; }

built_from() {  # built_from BINARY MODULE VERSION: the binary exists and was built from that module version
  [ -x "$1" ] && go version -m "$1" 2>/dev/null | grep -E "^\s+(mod|dep)\s+$2\s+$3(\s|$)" >/dev/null
}

if ! command -v go >/dev/null; then
  say "helm and kube-apiserver MISSING: no Go toolchain (the k8s tests will skip)"
  exit 0
fi

# -- helm --------------------------------------------------------------------------------------------------
if built_from "$CACHE/bin/helm" helm.sh/helm/v4 "$HELM_VERSION"; then
  say "helm $HELM_VERSION present"
else
  t=$SECONDS
  # one package at a time (-p 1): the machines have two cores, shared with the rest of `make deps`
  GOBIN="$CACHE/bin" nice go install -p 1 "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  say "helm $HELM_VERSION built in $((SECONDS - t))s"
fi

# -- etcd --------------------------------------------------------------------------------------------------
if command -v etcd >/dev/null; then
  say "etcd present ($(etcd --version | head -n 1))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  say "etcd installed from Debian ($(etcd --version | head -n 1))"
else
  say "etcd MISSING: apt-get install etcd-server (as root); the API-server tests will skip"
fi

# -- CNI plugins -------------------------------------------------------------------------------------------
# the kubelet's pods get their network from Debian's bridge/host-local/loopback/portmap plugins in /usr/lib/cni
# (tests/support/k8s.py); a machine with the kubelet cached but not the package skipped the pods test
if [ -x /usr/lib/cni/bridge ]; then
  say "CNI plugins present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins >/dev/null
  say "CNI plugins installed from Debian"
else
  say "CNI plugins MISSING: apt-get install containernetworking-plugins (as root); the kubelet test will skip"
fi

# -- kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy ----------------------------
# the controller-manager and the scheduler make the tests' cluster behave like one without nodes: Deployments
# and StatefulSets get pods, and the pods are Pending with the scheduler's reason (what `status` must show);
# the kubelet (with Debian's containerd) and kube-proxy (iptables mode: Service ClusterIPs and NodePorts) make
# it a one-node cluster that runs the chart's pods (tests/e2e/test_k8s_pods.py)
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
missing=()
for c in "${components[@]}"; do
  built_from "$CACHE/bin/$c" k8s.io/kubernetes "$K8S_VERSION" || missing+=("$c")
done
if [ ${#missing[@]} -eq 0 ]; then
  say "${components[*]} $K8S_VERSION present"
elif [ "$WANT_APISERVER" != 1 ]; then
  say "${missing[*]} not built (CKBPOOL_K8S_APISERVER=0); the API-server tests will skip"
else
  t=$SECONDS
  wrap="$CACHE/k8s-build/kubernetes-$K8S_VERSION"
  mkdir -p "$wrap"
  staging_version="v0.${K8S_VERSION#v1.}"
  GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@$K8S_VERSION"
  gomod="$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/go.mod"
  {
    echo "// generated by scripts/k8s-deps.sh: builds k8s.io/kubernetes/cmd/* from the module proxy"
    echo "module ckbpool.invalid/kubernetes-build"
    echo
    echo "go $(awk '$1 == "go" { print $2; exit }' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$gomod" | awk -v v="$staging_version" '$2 == "=>" && $3 ~ /^\.\/staging\// { print "\t" $1 " => " $1 " " v }'
    echo ")"
  } >"$wrap/go.mod"
  # the version the servers report (`helm install` checks a chart's kubeVersion against it): what
  # hack/lib/version.sh stamps in a release build; without it they say v0.0.0-master
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  out="$CACHE/k8s-build/out.$$"
  mkdir -p "$out"
  packages=()
  for c in "${missing[@]}"; do packages+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$wrap" && GOFLAGS=-mod=mod nice go build -ldflags "$ldflags" -o "$out/" "${packages[@]}")
  for c in "${missing[@]}"; do mv "$out/$c" "$CACHE/bin/$c"; done
  rmdir "$out"
  say "${missing[*]} $K8S_VERSION built in $((SECONDS - t))s"
fi
# -- CoreDNS: the cluster's Service names for the kubelet's pods --------------------------------------------
# only the plugins a one-node test cluster needs (bind, errors, health, ready, kubernetes, cache), linked into a
# small main of our own -- CoreDNS's documented way to choose plugins at compile time; its full plugin set would
# pull in every cloud SDK. client-go is pinned to the cluster's version, so the build reuses the kubelet's
# compiled packages.
if built_from "$CACHE/bin/coredns" github.com/coredns/coredns "$COREDNS_VERSION"; then
  say "coredns $COREDNS_VERSION present"
elif [ "$WANT_APISERVER" != 1 ]; then
  say "coredns not built (CKBPOOL_K8S_APISERVER=0); the kubelet test will skip"
else
  t=$SECONDS
  wrap="$CACHE/k8s-build/coredns-$COREDNS_VERSION"
  mkdir -p "$wrap"
  staging_version="v0.${K8S_VERSION#v1.}"
  cat >"$wrap/main.go" <<'GO'
// generated by scripts/k8s-deps.sh: CoreDNS with the plugins a one-node test cluster needs
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
GO
  printf '%s\n' "// generated by scripts/k8s-deps.sh" "module ckbpool.invalid/coredns-build" "" "go 1.26.0" "" \
    "require (" "	github.com/coredns/coredns $COREDNS_VERSION" "	k8s.io/api $staging_version" \
    "	k8s.io/apimachinery $staging_version" "	k8s.io/client-go $staging_version" ")" >"$wrap/go.mod"
  (cd "$wrap" && GOFLAGS=-mod=mod nice go build -o "$CACHE/k8s-build/coredns.$$" .)
  mv "$CACHE/k8s-build/coredns.$$" "$CACHE/bin/coredns"
  say "coredns $COREDNS_VERSION built in $((SECONDS - t))s"
fi
say "done in $((SECONDS - start))s"
