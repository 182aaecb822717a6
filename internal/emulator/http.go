package emulator

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// RequestIDHeader carries the request id of every answer; error bodies
// repeat it as requestId.
const RequestIDHeader = "X-Request-Id"

// MaxBodyBytes bounds a request body. A larger body gets 413 with the
// error body: the facts file does not say what Astro does (UNCONFIRMED);
// 413 is what a gateway in front of it would answer, and no valid body
// comes near 1 MiB.
const MaxBodyBytes = 1 << 20

// Field error codes of the emulator. Astro's own codes are not in the
// facts file (UNCONFIRMED); a client should rely on field and status only.
const (
	CodeRequired     = "required"
	CodeTooLong      = "too_long"
	CodeOutOfRange   = "out_of_range"
	CodeInvalid      = "invalid"
	CodeNotFound     = "not_found"
	CodeUnknownField = "unknown_field"
	CodeInvalidType  = "invalid_type"
	CodeDuplicate    = "duplicate"
)

// authedHandler serves a request whose caller was authenticated.
type authedHandler func(w http.ResponseWriter, r *http.Request, p *principal)

func (e *Emulator) routes() http.Handler {
	// org is an authenticated handler below /v1/organizations/{org}, which
	// must be the caller's organization.
	org := func(h authedHandler) http.HandlerFunc { return e.authed(e.inOrg(h)) }
	const o = "/v1/organizations/{org}"
	mux := http.NewServeMux()
	for pattern, m := range map[string]methods{
		"/v1/organizations":             {http.MethodGet: e.authed(e.listOrganizations)},
		o + "/workspaces":               {http.MethodGet: org(e.listWorkspaces)},
		o + "/tokens":                   {http.MethodGet: org(e.listTokens), http.MethodPost: e.late(org(e.createToken))},
		o + "/tokens/{token}":           {http.MethodGet: org(e.getToken), http.MethodPost: org(e.updateToken), http.MethodDelete: org(e.deleteToken)},
		o + "/tokens/{token}/roles":     {http.MethodPost: org(e.setRoles)},
		o + "/tokens/{token}/rotate":    {http.MethodPost: org(e.rotateToken)},
		o + "/deployments":              {http.MethodGet: org(e.listDeployments), http.MethodPost: org(e.createDeployment)},
		o + "/deployments/{deployment}": {http.MethodGet: org(e.getDeployment), http.MethodDelete: org(e.deleteDeployment)},
		o + "/clusters":                 {http.MethodGet: org(e.listClusters)},
		o + "/clusters/{cluster}":       {http.MethodGet: org(e.getCluster)},
		o + "/deployment-options":       {http.MethodGet: org(e.deploymentOptions)},
	} {
		mux.Handle(pattern, m)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "resource not found", nil)
	})
	return e.middleware(mux)
}

// methods dispatches on the method, so that a wrong method gets 405 with
// the error body (ServeMux's own 405 is plain text).
type methods map[string]http.HandlerFunc

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h(w, r)
		return
	}
	allow := make([]string, 0, len(m))
	for k := range m {
		allow = append(allow, k)
	}
	slices.Sort(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, http.StatusMethodNotAllowed, "method not allowed", nil)
}

// statusWriter remembers the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// middleware gives every answer a request id, logs it at Debug (method,
// path, status, duration: never a header or a body, so never a value),
// and applies the test knobs: latency, then the 429 burst, then the error
// rate, all before anything is processed; then the faults after processing
// (a held or lost answer, see faults.go).
func (e *Emulator) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := fmt.Sprintf("req_%s%08x", e.reqPrefix, e.reqSeq.Add(1))
		w.Header().Set(RequestIDHeader, id)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			e.log.LogAttrs(r.Context(), slog.LevelDebug, "astro emulator request",
				slog.String("request_id", id),
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.Int("status", sw.status),
				slog.Duration("duration", time.Since(start)))
		}()
		if e.latency > 0 {
			t := time.NewTimer(e.latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				writeError(sw, http.StatusServiceUnavailable, "request cancelled", nil)
				return
			}
		}
		switch status, retryAfter := e.fault(); status {
		case http.StatusTooManyRequests:
			secs := int64((retryAfter + time.Second - 1) / time.Second)
			sw.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			writeError(sw, status, "rate limit exceeded", nil)
			return
		case http.StatusServiceUnavailable:
			writeError(sw, status, "service unavailable (injected by the emulator)", nil)
			return
		}
		if hold, lose := e.afterFault(); hold > 0 || lose {
			e.serveHeld(sw, r, next, hold, lose)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// fault draws the injected failure of one request, if any.
func (e *Emulator) fault() (int, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.throttle > 0 {
		e.throttle--
		return http.StatusTooManyRequests, e.retryAft
	}
	if e.errRate > 0 && e.rng.Float64() < e.errRate {
		return http.StatusServiceUnavailable, 0
	}
	return 0, 0
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A write error means the client went away; there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes Astro's error body; requestId repeats the header.
func writeError(w http.ResponseWriter, status int, msg string, fields []astro.FieldError) {
	writeJSON(w, status, astro.ErrorBody{
		StatusCode:  status,
		Message:     msg,
		RequestID:   w.Header().Get(RequestIDHeader),
		FieldErrors: fields,
	})
}

// principal is the authenticated caller: a snapshot of its token's roles
// taken at authentication.
type principal struct {
	tokenID string
	name    string
	scope   astro.Scope
	orgRole string
	// wsRank is the rank (astro.WorkspaceRoleRank) of each Workspace role.
	wsRank map[string]int
	// deps holds the Deployments the token has a role on: a Deployment
	// token's own, or those an Organization token was given a role on.
	deps map[string]bool
}

// authed authenticates the bearer token: a value shaped like the JWS this
// emulator signs, whose apiTokenId names a live token whose stored hash
// matches (so only the value issued for it passes, and a rotated or deleted
// value fails at once), and which has not expired (endAt <= now).
// Every failure is the same 401 apart from expiry, so a caller cannot
// probe which check failed.
func (e *Emulator) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		scheme, value, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || value == "" {
			writeError(w, http.StatusUnauthorized, "missing or malformed bearer token", nil)
			return
		}
		tokenID, err := e.valueTokenID(value)
		if err != nil {
			writeError(w, http.StatusUnauthorized, errBadValue.Error(), nil)
			return
		}
		p, status := e.principalFor(tokenID, sha256Sum(value))
		switch status {
		case http.StatusOK:
			w.Header().Del("WWW-Authenticate")
			h(w, r, p)
		case http.StatusGone:
			writeError(w, http.StatusUnauthorized, "API token expired", nil)
		default:
			writeError(w, http.StatusUnauthorized, errBadValue.Error(), nil)
		}
	}
}

// principalFor looks the token up and records its use. It returns 200, or
// 401 (unknown, deleted or rotated), or 410 as an internal marker for
// "expired" (answered as 401).
func (e *Emulator) principalFor(tokenID string, hash [sha256.Size]byte) (*principal, int) {
	now := e.clock()
	e.mu.Lock()
	defer e.mu.Unlock()
	rec, ok := e.tokens[tokenID]
	if !ok || subtle.ConstantTimeCompare(rec.hash[:], hash[:]) != 1 {
		return nil, http.StatusUnauthorized
	}
	if rec.tok.EndAt != nil && !rec.tok.EndAt.After(e.now()) {
		return nil, http.StatusGone
	}
	rec.tok.LastUsedAt = &now
	p := &principal{tokenID: rec.tok.ID, name: rec.tok.Name, scope: rec.tok.Scope, wsRank: map[string]int{}, deps: map[string]bool{}}
	for _, role := range rec.tok.Roles {
		switch role.EntityType {
		case astro.EntityOrganization:
			p.orgRole = role.Role
		case astro.EntityWorkspace:
			p.wsRank[role.EntityID], _ = astro.WorkspaceRoleRank(role.Role)
		case astro.EntityDeployment:
			p.deps[role.EntityID] = true
		}
	}
	return p, http.StatusOK
}

// inOrg refuses a path naming another organization with 403. The emulator
// holds a single organization, so "another" also covers ids that exist
// nowhere: Astro would not tell a caller whether an organization it may
// not see exists (the emulator's reading; the facts file is silent).
func (e *Emulator) inOrg(h authedHandler) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, p *principal) {
		if r.PathValue("org") != e.org.ID {
			writeError(w, http.StatusForbidden, "the token has no access to this organization", nil)
			return
		}
		h(w, r, p)
	}
}

// Authorization, the emulator's reading of Astro's role model (the facts
// file gives the roles, not the permission matrix):
//   - ORGANIZATION_OWNER may do everything in its organization.
//   - Any other caller acts per Workspace: a Workspace token in its own
//     Workspace, an Organization token (ORGANIZATION_MEMBER or
//     BILLING_ADMIN) in each Workspace it holds a role in. Any Workspace
//     role may read the tokens of that Workspace; WORKSPACE_OWNER may also
//     create, update, set roles of, rotate and delete them.
//   - The tokens "of" a Workspace are its Workspace tokens and the tokens
//     of its Deployments. Organization tokens holding a role there can be
//     read (as the workspaceId filter lists them) but changed only by an
//     ORGANIZATION_OWNER.
//   - Deployment tokens cannot manage tokens at all.
//   - Anything else is 403.

func (p *principal) owner() bool { return p.orgRole == astro.RoleOrganizationOwner }

func (p *principal) canRead(ws string) bool { return p.owner() || (ws != "" && p.wsRank[ws] > 0) }

func (p *principal) canManage(ws string) bool {
	owner, _ := astro.WorkspaceRoleRank(astro.RoleWorkspaceOwner)
	return p.owner() || (ws != "" && p.wsRank[ws] >= owner)
}

// canReadToken and canManageToken need mu held (homeWorkspace reads the
// static Deployments only, but t is live state).
func (e *Emulator) canReadToken(p *principal, t *astro.Token) bool {
	if p.owner() {
		return true
	}
	if home := e.homeWorkspace(t); home != "" {
		return p.canRead(home)
	}
	for _, r := range t.Roles {
		if r.EntityType == astro.EntityWorkspace && p.canRead(r.EntityID) {
			return true
		}
	}
	return false
}

func (e *Emulator) canManageToken(p *principal, t *astro.Token) bool {
	return p.owner() || p.canManage(e.homeWorkspace(t))
}

func (p *principal) subject() *astro.Subject {
	return &astro.Subject{ID: p.tokenID, SubjectType: "SERVICEKEY", APITokenName: p.name}
}
