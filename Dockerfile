# syntax=docker/dockerfile:1

# The astro-sts image: one static binary, run by the GitHub Action (main and
# post steps) and usable as the broker (`astro-sts serve`).
#
# Build: docker build --build-arg VERSION=v1.2.3 -t astro-sts .
# The release workflow (.github/workflows/release.yml) builds it for
# linux/amd64 and linux/arm64 and pushes it to ghcr.io/astro-sts/astro-sts.
# CI builds it on every run (internal/testkit/imagetest, with a stand-in for the
# golang image when no registry is reachable; only the syntax line above is
# dropped from the copy it builds), checks its size, and runs the action
# and the broker from it.

# The builder runs on the build machine's platform and cross-compiles, so a
# multi-platform build needs no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# A static binary (no cgo, so no libc needed at run time), without file
# paths or debug symbols. The action's two entrypoints are links to it: the
# runner gives the main and post entrypoints the same args, so the binary
# tells them apart by the name it was run as. The links are made here
# because the scratch image below has no shell to run `ln`.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/usr/local/bin/astro-sts ./cmd/astro-sts \
 && ln -s astro-sts /out/usr/local/bin/astro-sts-action \
 && ln -s astro-sts /out/usr/local/bin/astro-sts-post \
 && mkdir -p /out/etc/ssl/certs /out/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && chmod 1777 /out/tmp

# scratch plus the CA bundle and an empty /tmp: the binary is static and
# needs nothing else, and every megabyte is pulled by every job (the image
# must stay under 15 MB; distroless/static would add about 2 MB of files
# the binary never reads). No USER line: GitHub runs container actions as
# the image's default user (root here) so that they can write the mounted
# file-command files; the broker is run as a non-root user by its
# deployment (deploy/broker-container.yaml: user 65532, read-only root,
# no capabilities; docs/deploy.md).
FROM scratch
# Copying the directory keeps the two symlinks as symlinks.
COPY --from=build /out/ /
ENTRYPOINT ["/usr/local/bin/astro-sts"]
