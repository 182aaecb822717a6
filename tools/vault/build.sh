#!/bin/sh
# Build HashiCorp Vault from its own Go module (tools/vault) for astro-sts's
# Vault-backed tests, once: the build takes about 10 minutes on 2 cores and
# gives a ~500 MB binary, so it lives in a cache directory outside the repo.
#
#   tools/vault/build.sh [CACHE_DIR]
#
# CACHE_DIR defaults to ${ASTRO_STS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/astro-sts}.
# The binary's path is the last line on stdout; run the tests with
#   ASTRO_STS_VAULT_BIN=<that path> go test ./internal/sink/...
# (internal/testkit/vaulttest also finds it in the default cache directory unaided).
set -eu

version=v1.21.0
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-${ASTRO_STS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/astro-sts}}
bin=$cache/vault-$version

# Reuse a binary that runs; rebuild one that does not (a truncated or
# interrupted build).
if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
echo "building Vault $version into $bin (about 10 minutes)..." >&2
# Build to a temporary name and rename, so an interrupted build never leaves
# a half-written binary under the final name.
tmp=$bin.tmp.$$
trap 'rm -f "$tmp"' EXIT INT TERM
# -mod=mod: Vault's module graph is resolved from tools/vault/go.mod and
# go.sum, which are committed so the build is reproducible. -s -w drops the
# symbol table and DWARF, roughly halving the binary.
(cd "$here" && go build -mod=mod -trimpath -ldflags='-s -w' -o "$tmp" .)
"$tmp" version >&2
mv "$tmp" "$bin"
trap - EXIT INT TERM
echo "$bin"
