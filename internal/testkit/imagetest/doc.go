// Package imagetest proves the project's image with a real Docker engine:
// it builds the image from the repository's Dockerfile (see
// internal/testkit/dockertest for the stand-in builder), checks its size, runs the
// action's main and post steps from it exactly as GitHub's runner runs a
// container action, and runs the broker from it locked down, as
// deploy/broker-container.yaml says and the Kubernetes manifests deploy it.
//
// Everything is in the tests; this file only names the package. Without a
// Docker engine the tests skip and say so, except under CI=true.
package imagetest
