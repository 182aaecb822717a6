// Command vault is HashiCorp Vault built from its own Go module, used only by
// astro-sts's tests to run a real `vault server -dev`. It is a separate module
// so that Vault's large dependency graph never enters astro-sts's go.mod.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
