// Package githubtest is a local stand-in for the parts of GitHub's REST API
// that writing Actions secrets touches, for tests that drive a real
// go-github client over loopback HTTP.
//
// It is strict where a fake is usually lenient, so that a test proves the
// client does what GitHub requires: every repository, environment and
// organization has its own Curve25519 key pair and key_id; a PUT must name
// the current key_id and carry a sealed box that really opens with the
// private key (the plaintext is stored for [Server.Secret] to return); tokens
// are checked (401), installation tokens only reach their own account (403),
// and App JWTs must be RS256-signed by the configured App key with a
// lifetime GitHub would accept.
//
// Served, under / and under /api/v3 (the GitHub Enterprise Server prefix
// go-github adds for a non-github.com base URL):
//
//	GET  /repos/{owner}/{repo}
//	GET  /repos/{owner}/{repo}/actions/secrets/public-key
//	PUT  /repos/{owner}/{repo}/actions/secrets/{name}
//	GET  /repos/{owner}/{repo}/environments/{env}/secrets/public-key
//	PUT  /repos/{owner}/{repo}/environments/{env}/secrets/{name}
//	GET  /repositories/{id}/environments/{env}/secrets/public-key   (go-github v62)
//	PUT  /repositories/{id}/environments/{env}/secrets/{name}       (go-github v62)
//	GET  /orgs/{org}/actions/secrets/public-key
//	PUT  /orgs/{org}/actions/secrets/{name}
//	POST /app/installations/{id}/access_tokens                       (App JWT)
//	GET  /repos/{owner}/{repo}/installation, /orgs/{org}/installation,
//	     /users/{user}/installation                                  (App JWT)
package githubtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/crypto/nacl/box"
)

// SecondaryRateLimitMessage is the message GitHub sends with a secondary
// rate limit; go-github recognises the answer by its documentation_url.
const SecondaryRateLimitMessage = "You have exceeded a secondary rate limit and have been temporarily blocked from content creation. Please retry your request again later."

const secondaryRateLimitDocs = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"

// maxBody caps a request body; a sealed secret is at most 48 KB on GitHub.
const maxBody = 64 << 10

// Config configures a [Server].
type Config struct {
	// Tokens are accepted as personal access tokens, valid for every
	// account.
	Tokens []string
	// AppID and AppKey enable the App endpoints: an App JWT must be signed
	// with RS256 by AppKey's private key and have iss AppID.
	AppID  int64
	AppKey *rsa.PublicKey
	// InstallationTokenTTL is the lifetime of minted installation tokens;
	// default one hour, as on GitHub.
	InstallationTokenTTL time.Duration
	// Now is the server's clock; nil means time.Now.
	Now func() time.Time
}

// Secret is a stored secret as the server decrypted it.
type Secret struct {
	Value                 string
	KeyID                 string
	Visibility            string
	SelectedRepositoryIDs []int64
}

// RepoTarget, EnvTarget and OrgTarget name the targets that own keys and
// secrets, for [Server.Secret], [Server.Fail] and [Server.PublicKeyID].
func RepoTarget(fullName string) string { return "repo:" + strings.ToLower(fullName) }

// EnvTarget names an environment of a repository.
func EnvTarget(fullName, env string) string {
	return "env:" + strings.ToLower(fullName) + ":" + env
}

// OrgTarget names an organization.
func OrgTarget(org string) string { return "org:" + strings.ToLower(org) }

// Server is a running test server. Its methods are safe for concurrent use.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server

	mu            sync.Mutex
	nextID        int64
	repos         map[string]*repo // by lower-case full name
	reposByID     map[int64]*repo
	accounts      map[string]bool               // lower-case owners
	installations map[string]int64              // lower-case account -> id
	instTokens    map[string]instToken          // token -> grant
	keys          map[string]*keyPair           // target -> key
	secrets       map[string]map[string]*Secret // target -> NAME -> secret
	faults        []*fault
	tokensIssued  int
}

type repo struct {
	id          int64
	owner, name string
	envs        map[string]bool
}

func (r *repo) fullName() string { return r.owner + "/" + r.name }

type instToken struct {
	account string
	expires time.Time
}

type keyPair struct {
	id        string
	pub, priv *[32]byte
}

type fault struct {
	match      string
	status     int
	retryAfter time.Duration
	rateLimit  bool
	remaining  int
}

// Start listens on a free 127.0.0.1 port and serves until [Server.Close].
func Start(cfg Config) (*Server, error) {
	if cfg.InstallationTokenTTL == 0 {
		cfg.InstallationTokenTTL = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("githubtest: listen: %w", err)
	}
	s := &Server{
		cfg:           cfg,
		ln:            ln,
		nextID:        1000,
		repos:         map[string]*repo{},
		reposByID:     map[int64]*repo{},
		accounts:      map[string]bool{},
		installations: map[string]int64{},
		instTokens:    map[string]instToken{},
		keys:          map[string]*keyPair{},
		secrets:       map[string]map[string]*Secret{},
	}
	s.srv = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// URL is the API base to give go-github's WithEnterpriseURLs (and
// GITHUB_API_URL): "http://127.0.0.1:PORT/api/v3".
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/api/v3" }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// AddRepository creates owner/name with the given environments and returns
// its id. The owner becomes an account that can hold organization secrets.
func (s *Server) AddRepository(fullName string, environments ...string) int64 {
	owner, name, _ := strings.Cut(fullName, "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	r := &repo{id: s.nextID, owner: owner, name: name, envs: map[string]bool{}}
	for _, e := range environments {
		r.envs[e] = true
	}
	s.repos[strings.ToLower(fullName)] = r
	s.reposByID[r.id] = r
	s.accounts[strings.ToLower(owner)] = true
	return r.id
}

// AddInstallation installs the App on account and returns the installation
// id.
func (s *Server) AddInstallation(account string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	s.installations[strings.ToLower(account)] = s.nextID
	s.accounts[strings.ToLower(account)] = true
	return s.nextID
}

// Secret returns the plaintext of secret name of target (see [RepoTarget],
// [EnvTarget], [OrgTarget]) as the server decrypted it.
func (s *Server) Secret(target, name string) (value string, ok bool) {
	sec, ok := s.SecretInfo(target, name)
	return sec.Value, ok
}

// SecretInfo returns the stored secret with its key id and, for
// organizations, its visibility and selected repositories.
func (s *Server) SecretInfo(target, name string) (Secret, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, ok := s.secrets[target][strings.ToUpper(name)]
	if !ok {
		return Secret{}, false
	}
	c := *sec
	c.SelectedRepositoryIDs = slices.Clone(sec.SelectedRepositoryIDs)
	return c, true
}

// PublicKeyID returns target's current key_id, creating its key pair if
// needed.
func (s *Server) PublicKeyID(target string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.keyLocked(target)
	if err != nil {
		return ""
	}
	return k.id
}

// RotateKey gives target a new key pair, as GitHub may: a secret sealed
// for the old key_id is refused from then on.
func (s *Server) RotateKey(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, target)
}

// InstallationTokensIssued counts the installation tokens minted so far.
func (s *Server) InstallationTokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokensIssued
}

// Fail makes the next n requests that match answer status with a GitHub
// error body. match is a path prefix ("/orgs/acme", without /api/v3) or a
// target ([RepoTarget] and friends; a request matches the target it reads
// or writes, however it is addressed).
func (s *Server) Fail(match string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{match: match, status: status, remaining: n})
}

// RateLimit makes the next n matching requests answer GitHub's secondary
// rate limit: 403, [SecondaryRateLimitMessage], and Retry-After in whole
// seconds. go-github turns it into *github.AbuseRateLimitError.
func (s *Server) RateLimit(match string, retryAfter time.Duration, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{match: match, status: http.StatusForbidden, rateLimit: true, retryAfter: retryAfter, remaining: n})
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /repos/{owner}/{repo}", s.getRepo)
	mux.HandleFunc("GET /repos/{owner}/{repo}/actions/secrets/public-key", s.repoScoped(s.publicKey))
	mux.HandleFunc("PUT /repos/{owner}/{repo}/actions/secrets/{name}", s.repoScoped(s.putSecret))
	mux.HandleFunc("GET /repos/{owner}/{repo}/environments/{env}/secrets/public-key", s.envScoped(s.publicKey))
	mux.HandleFunc("PUT /repos/{owner}/{repo}/environments/{env}/secrets/{name}", s.envScoped(s.putSecret))
	mux.HandleFunc("GET /repositories/{id}/environments/{env}/secrets/public-key", s.envScoped(s.publicKey))
	mux.HandleFunc("PUT /repositories/{id}/environments/{env}/secrets/{name}", s.envScoped(s.putSecret))
	mux.HandleFunc("GET /orgs/{org}/actions/secrets/public-key", s.orgScoped(s.publicKey))
	mux.HandleFunc("PUT /orgs/{org}/actions/secrets/{name}", s.orgScoped(s.putSecret))
	mux.HandleFunc("POST /app/installations/{id}/access_tokens", s.createInstallationToken)
	mux.HandleFunc("GET /repos/{owner}/{repo}/installation", s.findInstallation)
	mux.HandleFunc("GET /orgs/{org}/installation", s.findInstallation)
	mux.HandleFunc("GET /users/{user}/installation", s.findInstallation)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := strings.CutPrefix(r.URL.Path, "/api/v3/"); ok {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/" + p
			r2.URL.RawPath = ""
			if r.URL.RawPath != "" {
				r2.URL.RawPath = "/" + strings.TrimPrefix(r.URL.RawPath, "/api/v3/")
			}
			r = r2
		}
		if s.injectFault(w, r.URL.Path, true) {
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		mux.ServeHTTP(w, r)
	})
}

// injectFault answers with the first matching fault, if any. byPath selects
// path-prefix faults (checked before routing) or target faults (checked
// once the handler knows the target).
func (s *Server) injectFault(w http.ResponseWriter, key string, byPath bool) bool {
	s.mu.Lock()
	var f *fault
	for _, c := range s.faults {
		if c.remaining <= 0 || strings.HasPrefix(c.match, "/") != byPath {
			continue
		}
		if (byPath && strings.HasPrefix(key, c.match)) || (!byPath && c.match == key) {
			c.remaining--
			f = c
			break
		}
	}
	s.mu.Unlock()
	if f == nil {
		return false
	}
	if f.rateLimit {
		w.Header().Set("Retry-After", strconv.Itoa(int(f.retryAfter/time.Second)))
		writeJSON(w, f.status, map[string]string{"message": SecondaryRateLimitMessage, "documentation_url": secondaryRateLimitDocs})
		return true
	}
	writeError(w, f.status, faultMessage(f.status))
	return true
}

func faultMessage(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "Bad credentials"
	case http.StatusForbidden:
		return "Resource not accessible by personal access token"
	case http.StatusNotFound:
		return "Not Found"
	case http.StatusInternalServerError:
		return "Server Error"
	default:
		return http.StatusText(status)
	}
}

// scope is what a secrets request addresses, resolved from its path.
type scope struct {
	target  string
	account string // owner whose installation may act on it
	org     string // set for organization secrets
}

type scopedHandler func(http.ResponseWriter, *http.Request, scope)

// repoScoped, envScoped and orgScoped resolve the target, authenticate,
// authorise and apply target faults before calling h.
func (s *Server) repoScoped(h scopedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rp, ok := s.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
		s.serveScoped(w, r, ok, func() scope {
			return scope{target: RepoTarget(rp.fullName()), account: rp.owner}
		}, h)
	}
}

func (s *Server) envScoped(h scopedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var (
			rp *repo
			ok bool
		)
		if idStr := r.PathValue("id"); idStr != "" {
			id, err := strconv.ParseInt(idStr, 10, 64)
			if err == nil {
				s.mu.Lock()
				rp, ok = s.reposByID[id]
				s.mu.Unlock()
			}
		} else {
			rp, ok = s.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
		}
		env := r.PathValue("env")
		if ok {
			s.mu.Lock()
			ok = rp.envs[env]
			s.mu.Unlock()
		}
		s.serveScoped(w, r, ok, func() scope {
			return scope{target: EnvTarget(rp.fullName(), env), account: rp.owner}
		}, h)
	}
}

func (s *Server) orgScoped(h scopedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		org := r.PathValue("org")
		s.mu.Lock()
		ok := s.accounts[strings.ToLower(org)]
		s.mu.Unlock()
		s.serveScoped(w, r, ok, func() scope {
			return scope{target: OrgTarget(org), account: org, org: strings.ToLower(org)}
		}, h)
	}
}

func (s *Server) serveScoped(w http.ResponseWriter, r *http.Request, exists bool, sc func() scope, h scopedHandler) {
	account, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if !exists {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	scp := sc()
	if account != "" && !strings.EqualFold(account, scp.account) {
		writeError(w, http.StatusForbidden, "Resource not accessible by integration")
		return
	}
	if s.injectFault(w, scp.target, false) {
		return
	}
	h(w, r, scp)
}

// authenticate accepts a configured token (account "": any) or an unexpired
// installation token (its account). Anything else is answered 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (account string, ok bool) {
	tok := bearer(r)
	if tok != "" && slices.Contains(s.cfg.Tokens, tok) {
		return "", true
	}
	s.mu.Lock()
	grant, found := s.instTokens[tok]
	s.mu.Unlock()
	if tok != "" && found && s.cfg.Now().Before(grant.expires) {
		return grant.account, true
	}
	writeError(w, http.StatusUnauthorized, "Bad credentials")
	return "", false
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	for _, p := range []string{"Bearer ", "bearer ", "token "} {
		if t, ok := strings.CutPrefix(h, p); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

func (s *Server) lookupRepo(fullName string) (*repo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp, ok := s.repos[strings.ToLower(fullName)]
	return rp, ok
}

func (s *Server) getRepo(w http.ResponseWriter, r *http.Request) {
	account, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	rp, found := s.lookupRepo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	// GitHub hides what a token cannot see behind 404.
	if !found || (account != "" && !strings.EqualFold(account, rp.owner)) {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	if s.injectFault(w, RepoTarget(rp.fullName()), false) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":        rp.id,
		"name":      rp.name,
		"full_name": rp.fullName(),
		"owner":     map[string]any{"login": rp.owner},
		"private":   true,
	})
}

func (s *Server) publicKey(w http.ResponseWriter, _ *http.Request, sc scope) {
	s.mu.Lock()
	k, err := s.keyLocked(sc.target)
	s.mu.Unlock()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Server Error")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"key_id": k.id, "key": base64.StdEncoding.EncodeToString(k.pub[:])})
}

var secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (s *Server) putSecret(w http.ResponseWriter, r *http.Request, sc scope) {
	name := r.PathValue("name")
	if !secretNameRE.MatchString(name) || strings.HasPrefix(strings.ToUpper(name), "GITHUB_") {
		writeError(w, http.StatusUnprocessableEntity, "Secret names can only contain alphanumeric characters or underscores, must not start with a number or GITHUB_")
		return
	}
	var body struct {
		EncryptedValue        string  `json:"encrypted_value"`
		KeyID                 string  `json:"key_id"`
		Visibility            string  `json:"visibility"`
		SelectedRepositoryIDs []int64 `json:"selected_repository_ids"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	if sc.org == "" && (body.Visibility != "" || len(body.SelectedRepositoryIDs) > 0) {
		writeError(w, http.StatusUnprocessableEntity, "visibility applies to organization secrets only")
		return
	}
	if sc.org != "" {
		if msg := s.checkVisibility(sc.org, body.Visibility, body.SelectedRepositoryIDs); msg != "" {
			writeError(w, http.StatusUnprocessableEntity, msg)
			return
		}
	}
	ct, err := base64.StdEncoding.DecodeString(body.EncryptedValue)
	if err != nil || body.EncryptedValue == "" {
		writeError(w, http.StatusUnprocessableEntity, "encrypted_value must be base64")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.keyLocked(sc.target)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Server Error")
		return
	}
	if body.KeyID != k.id {
		writeError(w, http.StatusUnprocessableEntity, "key_id does not match the current public key")
		return
	}
	plain, ok := box.OpenAnonymous(nil, ct, k.pub, k.priv)
	if !ok {
		writeError(w, http.StatusUnprocessableEntity, "encrypted_value could not be decrypted with the key of key_id")
		return
	}
	if s.secrets[sc.target] == nil {
		s.secrets[sc.target] = map[string]*Secret{}
	}
	upper := strings.ToUpper(name)
	_, existed := s.secrets[sc.target][upper]
	s.secrets[sc.target][upper] = &Secret{
		Value:                 string(plain),
		KeyID:                 k.id,
		Visibility:            body.Visibility,
		SelectedRepositoryIDs: slices.Clone(body.SelectedRepositoryIDs),
	}
	if existed {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{})
}

// checkVisibility validates an organization secret's visibility; selected
// repositories must belong to the organization.
func (s *Server) checkVisibility(org, vis string, ids []int64) string {
	switch vis {
	case "all", "private":
		if len(ids) > 0 {
			return "selected_repository_ids requires visibility selected"
		}
	case "selected":
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, id := range ids {
			rp, ok := s.reposByID[id]
			if !ok || !strings.EqualFold(rp.owner, org) {
				return fmt.Sprintf("repository %d is not in the organization", id)
			}
		}
	default:
		return "visibility must be one of all, private, selected"
	}
	return ""
}

// keyLocked returns target's key pair, generating it on first use.
func (s *Server) keyLocked(target string) (*keyPair, error) {
	if k, ok := s.keys[target]; ok {
		return k, nil
	}
	pub, priv, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	// GitHub's key ids are large decimal numbers.
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	k := &keyPair{id: n.String(), pub: pub, priv: priv}
	s.keys[target] = k
	return k, nil
}

// verifyAppJWT checks an App JWT as GitHub does: RS256 by the App's key,
// iss the App id, unexpired, at most 10 minutes long, not issued in the
// future (60 s of skew allowed).
func (s *Server) verifyAppJWT(r *http.Request) error {
	if s.cfg.AppKey == nil {
		return errors.New("no GitHub App configured")
	}
	raw := bearer(r)
	if raw == "" {
		return errors.New("no bearer token")
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return errors.New("A JSON web token could not be decoded")
	}
	var c jwt.Claims
	if err := tok.Claims(s.cfg.AppKey, &c); err != nil {
		return errors.New("A JSON web token could not be decoded")
	}
	now := s.cfg.Now()
	switch {
	case c.Issuer != strconv.FormatInt(s.cfg.AppID, 10):
		return errors.New("'Issuer' claim ('iss') must be the App id")
	case c.IssuedAt == nil || c.Expiry == nil:
		return errors.New("'iat' and 'exp' claims are required")
	case c.IssuedAt.Time().After(now.Add(60 * time.Second)):
		return errors.New("'Issued at' claim ('iat') must be an Integer representing a time in the past")
	case !c.Expiry.Time().After(now):
		return errors.New("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")
	case c.Expiry.Time().Sub(c.IssuedAt.Time()) > 10*time.Minute:
		return errors.New("'Expiration time' claim ('exp') is too far in the future")
	}
	return nil
}

func (s *Server) createInstallationToken(w http.ResponseWriter, r *http.Request) {
	if err := s.verifyAppJWT(r); err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	account := ""
	for a, iid := range s.installations {
		if iid == id {
			account = a
		}
	}
	s.mu.Unlock()
	if account == "" {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		writeError(w, http.StatusInternalServerError, "Server Error")
		return
	}
	tok := "ghs_" + base64.RawURLEncoding.EncodeToString(b)
	expires := s.cfg.Now().Add(s.cfg.InstallationTokenTTL).UTC().Truncate(time.Second)
	s.mu.Lock()
	s.instTokens[tok] = instToken{account: account, expires: expires}
	s.tokensIssued++
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"token":                tok,
		"expires_at":           expires.Format(time.RFC3339),
		"permissions":          map[string]string{"secrets": "write", "organization_secrets": "write", "environments": "read"},
		"repository_selection": "all",
	})
}

func (s *Server) findInstallation(w http.ResponseWriter, r *http.Request) {
	if err := s.verifyAppJWT(r); err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	account := r.PathValue("owner")
	if account == "" {
		account = r.PathValue("org")
	}
	if account == "" {
		account = r.PathValue("user")
	}
	if owner := r.PathValue("owner"); owner != "" {
		if _, ok := s.lookupRepo(owner + "/" + r.PathValue("repo")); !ok {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
	}
	s.mu.Lock()
	id, ok := s.installations[strings.ToLower(account)]
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      id,
		"app_id":  s.cfg.AppID,
		"account": map[string]any{"login": account},
	})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
