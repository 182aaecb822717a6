package githubtest_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/google/go-github/v62/github"
	"golang.org/x/crypto/nacl/box"

	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
)

// A go-github client pointed at the server writes a repository secret; the
// test reads back the plaintext the server decrypted.
func Example() {
	s, err := githubtest.Start(githubtest.Config{Tokens: []string{"test-token"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	s.AddRepository("acme/dags")

	ctx := context.Background()
	gh, err := github.NewClient(nil).WithAuthToken("test-token").WithEnterpriseURLs(s.URL(), s.URL())
	if err != nil {
		fmt.Println(err)
		return
	}
	key, _, err := gh.Actions.GetRepoPublicKey(ctx, "acme", "dags")
	if err != nil {
		fmt.Println(err)
		return
	}
	raw, _ := base64.StdEncoding.DecodeString(key.GetKey())
	var pk [32]byte
	copy(pk[:], raw)
	sealed, _ := box.SealAnonymous(nil, []byte("hello"), &pk, rand.Reader)
	_, err = gh.Actions.CreateOrUpdateRepoSecret(ctx, "acme", "dags", &github.EncryptedSecret{
		Name:           "GREETING",
		KeyID:          key.GetKeyID(),
		EncryptedValue: base64.StdEncoding.EncodeToString(sealed),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(s.Secret(githubtest.RepoTarget("acme/dags"), "GREETING"))
	// Output: hello true
}
