#!/bin/sh
# Build Prometheus's promtool from Prometheus's own Go module, once, for the
# tests of the alerting rules (deploy/prometheus): `promtool check rules`
# and `promtool test rules` are the checks Prometheus itself runs, so the
# rules are tested by the parser and evaluator that will load them. The
# build takes a few minutes on 2 cores, so the binary lives in a cache
# directory outside the repository, beside tools/vault's.
#
#   tools/promtool/build.sh [CACHE_DIR]
#
# CACHE_DIR defaults to ${ASTRO_STS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/astro-sts}.
# The binary's path is the last line on stdout; run the tests with
#   ASTRO_STS_PROMTOOL_BIN=<that path> go test ./deploy/prometheus/...
# (the test also finds it in the default cache directory unaided).
set -eu

# Prometheus tags its Go module v0.X.Y for release 3.X.Y.
version=v0.316.0
cache=${1:-${ASTRO_STS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/astro-sts}}
bin=$cache/promtool-$version

# Reuse a binary that runs; rebuild one that does not (a truncated or
# interrupted build).
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
echo "building promtool $version into $bin (a few minutes)..." >&2
# Install into a temporary directory and rename, so an interrupted build
# never leaves a half-written binary under the final name.
tmp=$(mktemp -d "$cache/promtool.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
# `go install pkg@version` resolves the build from Prometheus's own go.mod
# and go.sum at that tag, checked against the checksum database, so the
# build is reproducible without a module of ours to keep. GOFLAGS is
# cleared of -mod settings a caller may have, which go install refuses.
# remove_all_sd leaves out the service discoveries (AWS, Azure, GCE,
# Kubernetes...) and their SDKs, which checking and testing rules never
# use.
GOFLAGS=-buildvcs=false GOBIN=$tmp go install -trimpath -tags remove_all_sd -ldflags='-s -w' \
	"github.com/prometheus/prometheus/cmd/promtool@$version"
"$tmp/promtool" --version >&2
mv "$tmp/promtool" "$bin"
echo "$bin"
