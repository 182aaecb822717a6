// Package kubernetes holds no code: its directory has the broker's
// Kubernetes manifests (a kustomize base and overlays) and a test that
// renders them, in a module of its own so that the kustomize and
// Kubernetes API modules stay out of the project's go.mod.
package kubernetes
