// Package kubernetes holds no code: its directory has the broker's
// Kubernetes manifests (a kustomize base, overlays and a Prometheus
// component) and the tests of everything under deploy/: they render the
// manifests and the Helm chart (../helm), and run promtool on the alerting
// rules (../prometheus). It is a module of its own so that the kustomize,
// Helm and Kubernetes API modules stay out of the project's go.mod.
package kubernetes
