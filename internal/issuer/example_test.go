package issuer_test

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/astro-sts/astro-sts/internal/issuer"
)

// The issuer plays the runner: a job asks for an ID token with the URL and
// request token the runner would put in ACTIONS_ID_TOKEN_REQUEST_URL and
// ACTIONS_ID_TOKEN_REQUEST_TOKEN.
func ExampleIssuer_RequestURL() {
	iss, err := issuer.Start(issuer.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer iss.Close()

	url, requestToken := iss.RequestURL(issuer.DefaultClaims())
	req, _ := http.NewRequest(http.MethodGet, url+"&audience=https://sts.example", nil)
	req.Header.Set("Authorization", "Bearer "+requestToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var out struct {
		Value string `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.StatusCode, out.Value != "")
	// Output: 200 true
}
