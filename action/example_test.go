package action_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/action"
	"github.com/astro-sts/astro-sts/internal/runner"
)

// Example runs the action's main and post steps as a runner would, against
// a broker stand-in: the token is exported as ASTRO_API_TOKEN, its id goes
// through the step state to the post step, which revokes it.
func Example() {
	broker := http.NewServeMux()
	broker.HandleFunc("POST /v1/exchange", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"token":"astro-token-value","token_id":"tok_42","organization_id":"org_1",
			"workspace_id":"ws_1","role":"WORKSPACE_AUTHOR","expires_at":"2030-01-02T03:19:05Z","rule":"deploy-main"}`)
	})
	broker.HandleFunc("POST /v1/revoke", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Printf("broker: revoke %s\n", body)
		w.WriteHeader(http.StatusNoContent)
	})
	bs := httptest.NewServer(broker)
	defer bs.Close()
	ids := httptest.NewServer(&runner.IDTokenHandler{RequestToken: "request-token"})
	defer ids.Close()

	dir, _ := os.MkdirTemp("", "runner")
	defer os.RemoveAll(dir)
	runner, _ := runner.NewRunner(dir, runner.Options{
		Inputs:              map[string]string{"broker-url": bs.URL, "role": "WORKSPACE_AUTHOR"},
		IDTokenURL:          ids.URL + "/token?api-version=2.0",
		IDTokenRequestToken: "request-token",
	})
	step := func(env map[string]string) *githubactions.Action {
		return githubactions.New(githubactions.WithGetenv(func(k string) string { return env[k] }), githubactions.WithWriter(io.Discard))
	}

	if err := action.Main(context.Background(), step(runner.Env()), action.Deps{}); err != nil {
		fmt.Println(err)
		return
	}
	exported, _ := runner.ExportedEnv()
	outputs, _ := runner.Outputs()
	fmt.Println("ASTRO_API_TOKEN exported:", exported["ASTRO_API_TOKEN"] == "astro-token-value")
	fmt.Println("token-id:", outputs["token-id"], "role:", outputs["role"], "expires-at:", outputs["expires-at"])

	postEnv, _ := runner.PostEnv()
	if err := action.Post(context.Background(), step(postEnv), action.Deps{}); err != nil {
		fmt.Println(err)
	}
	// Output:
	// ASTRO_API_TOKEN exported: true
	// token-id: tok_42 role: WORKSPACE_AUTHOR expires-at: 2030-01-02T03:19:05Z
	// broker: revoke {"token_id":"tok_42"}
}
