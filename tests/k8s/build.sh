#!/usr/bin/env bash
# Builds the real Kubernetes peers the KMS end-to-end test runs qkeyd beside:
# kube-apiserver and kubectl (k8s.io/kubernetes at a release tag, its staging
# modules replaced by their published versions, see apiserver/go.mod) and
# etcd (etcd/go.mod), all from the Go module proxy. The binaries are cached
# outside the repo, in a folder named by the versions, so only the first run
# on a machine pays the build (about 15-20 minutes on 2 cores).
#
#   tests/k8s/build.sh        prints the folder holding the binaries
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
k8s=v1.37.2
etcd=v3.7.3
out=${QKEYD_K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/qkeyd-e2e/k8s-$k8s-etcd-$etcd}
export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly"
mkdir -p "$out"
if [[ ! -x $out/kube-apiserver || ! -x $out/kubectl ]]; then
  echo "building kube-apiserver and kubectl $k8s into $out (first run only)" >&2
  ver="-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
  (cd "$here/apiserver" && go build -trimpath -ldflags "-s -w $ver" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl) >&2
fi
if [[ ! -x $out/etcd ]]; then
  echo "building etcd $etcd into $out (first run only)" >&2
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) >&2
fi
echo "$out"
