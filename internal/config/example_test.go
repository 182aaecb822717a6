package config_test

import (
	"fmt"

	"github.com/astro-sts/astro-sts/internal/config"
)

// The rotate command's configuration: the Astro section it shares with the
// broker, and the sinks' section. Its secrets print as <redacted>.
func ExampleLoadRotate() {
	c, err := config.LoadRotate(map[string]string{
		"ASTRO_ORGANIZATION_ID":    "clorg",
		"ASTRO_ORGANIZATION_TOKEN": "an-organization-token",
		"GITHUB_TOKEN":             "a-github-token",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Astro.APIURL, c.Astro.OrganizationID, c.Astro.OrganizationToken())
	fmt.Printf("%+v\n", c.Sinks.GitHub.Token)

	_, err = config.LoadRotate(map[string]string{"ASTRO_API_URL": "http://api.astronomer.io/v1"})
	fmt.Println(err)
	// Output:
	// https://api.astronomer.io/v1 clorg <redacted>
	// <redacted>
	// ASTRO_API_URL: plain http is allowed only for loopback hosts
	// ASTRO_ORGANIZATION_ID is required
	// one of ASTRO_ORGANIZATION_TOKEN or ASTRO_ORGANIZATION_TOKEN_FILE is required
}
