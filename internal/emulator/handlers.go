package emulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// Bounds the emulator validates, from the facts file.
const (
	MaxNameLen        = 256
	MaxDescriptionLen = 500
	DefaultLimit      = 20
	MaxLimit          = 1000
	// maxSorts bounds the repeatable sorts parameter; there are only five
	// sortable fields.
	maxSorts = 10
)

// httpError is a refusal on its way to [writeError].
type httpError struct {
	status int
	msg    string
	fields []astro.FieldError
}

func (h *httpError) write(w http.ResponseWriter) { writeError(w, h.status, h.msg, h.fields) }

// reply ends a handler that decided under the lock and answers after it:
// the refusal he, or else v as JSON with 200.
func reply(w http.ResponseWriter, he *httpError, v any) {
	if he != nil {
		he.write(w)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func badRequest(msg string, fields ...astro.FieldError) *httpError {
	return &httpError{status: http.StatusBadRequest, msg: msg, fields: fields}
}

var (
	errNotFound  = &httpError{status: http.StatusNotFound, msg: "API token not found"}
	errForbidden = &httpError{status: http.StatusForbidden, msg: "the token lacks the permission for this action"}
)

// decodeBody decodes r's body strictly into v: one JSON object, no unknown
// fields, at most [MaxBodyBytes]. Astro's own strictness about unknown
// fields is UNCONFIRMED; the emulator refuses them so that a misspelled
// field in our client fails in tests instead of being silently ignored.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *httpError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			if he := bodyError(err); he.status != http.StatusBadRequest {
				return he
			}
		}
		return badRequest("the request body must hold exactly one JSON object")
	}
	return nil
}

func bodyError(err error) *httpError {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("the request body exceeds %d bytes", MaxBodyBytes)}
	case errors.Is(err, io.EOF):
		return badRequest("the request body is empty")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("the request body is not valid JSON")
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return badRequest("the request body must be a JSON object")
		}
		return badRequest("invalid request body", astro.FieldError{Code: CodeInvalidType, Field: field, Message: "has the wrong JSON type"})
	}
	// encoding/json has no typed error for an unknown field; its message
	// is documented and stable ("json: unknown field \"x\"").
	if name, ok := strings.CutPrefix(err.Error(), `json: unknown field "`); ok {
		name = strings.TrimSuffix(name, `"`)
		return badRequest("invalid request body", astro.FieldError{Code: CodeUnknownField, Field: name, Message: "is not a known field"})
	}
	return badRequest("the request body is not valid JSON")
}

// query parses the raw query strictly: r.URL.Query drops malformed pairs
// silently, which would turn "limit=%zz" into the default limit.
func query(r *http.Request) (url.Values, *httpError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("the query string is malformed")
	}
	return q, nil
}

// readQuery parses r's query strictly and hands it to read, which takes the
// parameters it needs and adds a [astro.FieldError] to fe for each bad one.
// A malformed query or any problem is answered here with one 400 naming
// them all, and readQuery returns false. Every list endpoint starts so.
func readQuery(w http.ResponseWriter, r *http.Request, read func(q url.Values, fe *[]astro.FieldError)) bool {
	q, he := query(r)
	if he != nil {
		he.write(w)
		return false
	}
	var fe []astro.FieldError
	read(q, &fe)
	if len(fe) > 0 {
		badRequest("invalid query parameters", fe...).write(w)
		return false
	}
	return true
}

// single returns the only value of a parameter; a repeated one is an error.
func single(q url.Values, name string, fe *[]astro.FieldError) string {
	vs := q[name]
	if len(vs) > 1 {
		*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: name, Message: "must be given at most once"})
		return ""
	}
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// intParam reads a decimal integer within lo..hi. Only digits are
// accepted (no sign, no exponent, at most 18 digits), so no input can
// overflow.
func intParam(q url.Values, name string, def, lo, hi int, fe *[]astro.FieldError) int {
	if _, ok := q[name]; !ok {
		return def
	}
	if len(q[name]) > 1 {
		single(q, name, fe)
		return def
	}
	v := q.Get(name)
	n, ok := 0, len(v) > 0 && len(v) <= 18
	for i := 0; ok && i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			ok = false
			break
		}
		n = n*10 + int(v[i]-'0')
	}
	if !ok || n < lo || n > hi {
		*fe = append(*fe, astro.FieldError{Code: CodeOutOfRange, Field: name, Message: fmt.Sprintf("must be an integer from %d to %d", lo, hi)})
		return def
	}
	return n
}

const maxOffset = 999_999_999_999_999_999

func boolParam(q url.Values, name string, fe *[]astro.FieldError) bool {
	switch v := single(q, name, fe); v {
	case "", "false":
		return false
	case "true":
		return true
	}
	*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: name, Message: "must be true or false"})
	return false
}

// pageParams reads offset (default 0) and limit (default 20, 1..1000).
func pageParams(q url.Values, fe *[]astro.FieldError) (offset, limit int) {
	return intParam(q, "offset", 0, 0, maxOffset, fe), intParam(q, "limit", DefaultLimit, 1, MaxLimit, fe)
}

// page returns items[offset:offset+limit], never nil (JSON [] not null),
// and what the page says about itself: totalCount counts all of items.
func page[T any](items []T, offset, limit int) ([]T, astro.PageInfo) {
	info := astro.PageInfo{Limit: limit, Offset: offset, TotalCount: len(items)}
	if offset >= len(items) {
		return []T{}, info
	}
	return items[offset:min(offset+limit, len(items))], info
}

// sortKey is one entry of the repeatable sorts parameter.
type sortKey struct {
	field string
	desc  bool
}

// tokenSortFields are the sortable fields of the token list.
var tokenSortFields = map[string]func(a, b *astro.Token) int{
	"name":         func(a, b *astro.Token) int { return strings.Compare(a.Name, b.Name) },
	"description":  func(a, b *astro.Token) int { return strings.Compare(a.Description, b.Description) },
	"createdAt":    func(a, b *astro.Token) int { return a.CreatedAt.Compare(b.CreatedAt) },
	"updatedAt":    func(a, b *astro.Token) int { return a.UpdatedAt.Compare(b.UpdatedAt) },
	"tokenStartAt": func(a, b *astro.Token) int { return a.StartAt.Compare(b.StartAt) },
}

func (k sortKey) compare(a, b *astro.Token) int { return k.apply(tokenSortFields[k.field](a, b)) }

// apply turns an ascending comparison into this key's direction.
func (k sortKey) apply(c int) int {
	if k.desc {
		return -c
	}
	return c
}

// sortParams reads the repeatable sorts parameter; fields lists the
// sortable field names, in the order the error message names them.
func sortParams(q url.Values, fields []string, fe *[]astro.FieldError) []sortKey {
	vs := q["sorts"]
	if len(vs) > maxSorts {
		*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: "sorts", Message: fmt.Sprintf("at most %d sorts", maxSorts)})
		return nil
	}
	var keys []sortKey
	for _, v := range vs {
		field, dir, _ := strings.Cut(v, ":")
		if !slices.Contains(fields, field) || (dir != "asc" && dir != "desc") {
			*fe = append(*fe, astro.FieldError{Code: CodeInvalid, Field: "sorts",
				Message: fmt.Sprintf("each sort must be %s, followed by :asc or :desc", orList(fields))})
			return nil
		}
		keys = append(keys, sortKey{field: field, desc: dir == "desc"})
	}
	return keys
}

// orList writes "a, b or c".
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

// tokenSorts is the order the token list's error message names its fields.
var tokenSorts = []string{"name", "description", "createdAt", "updatedAt", "tokenStartAt"}

func hasRole(t *astro.Token, typ astro.EntityType, id string) bool {
	for _, r := range t.Roles {
		if r.EntityType == typ && r.EntityID == id {
			return true
		}
	}
	return false
}

// listTokens serves GET /organizations/{org}/tokens. Filters combine with
// AND; the default order is createdAt ascending, then id; totalCount is the
// filtered count.
func (e *Emulator) listTokens(w http.ResponseWriter, r *http.Request, p *principal) {
	var (
		offset, limit int
		keys          []sortKey
		wsID, depID   string
		onlyOrg       bool
	)
	if !readQuery(w, r, func(q url.Values, fe *[]astro.FieldError) {
		offset, limit = pageParams(q, fe)
		keys = sortParams(q, tokenSorts, fe)
		wsID = single(q, "workspaceId", fe)
		depID = single(q, "deploymentId", fe)
		onlyOrg = boolParam(q, "includeOnlyOrganizationTokens", fe)
	}) {
		return
	}
	// Whoever is not ORGANIZATION_OWNER lists inside a Workspace they hold
	// a role in, named by workspaceId or by the Deployment's Workspace.
	if !p.owner() {
		var scopes []string
		if wsID != "" {
			scopes = append(scopes, wsID)
		}
		if depID != "" {
			e.mu.Lock()
			d, ok := e.deployment(depID)
			e.mu.Unlock()
			if !ok {
				// No Workspace can grant reading the tokens of a Deployment
				// that does not exist: the same answer as one the caller
				// may not see.
				errForbidden.write(w)
				return
			}
			scopes = append(scopes, d.WorkspaceID)
		}
		if len(scopes) == 0 {
			writeError(w, http.StatusForbidden, "listing all tokens needs ORGANIZATION_OWNER; filter by workspaceId", nil)
			return
		}
		for _, ws := range scopes {
			if !p.canRead(ws) {
				errForbidden.write(w)
				return
			}
		}
	}

	e.mu.Lock()
	matched := make([]astro.Token, 0, len(e.tokens))
	for _, rec := range e.tokens {
		t := &rec.tok
		switch {
		case onlyOrg && t.Scope != astro.ScopeOrganization:
		case wsID != "" && !hasRole(t, astro.EntityWorkspace, wsID):
		case depID != "" && !hasRole(t, astro.EntityDeployment, depID):
		default:
			matched = append(matched, cloneToken(*t))
		}
	}
	e.mu.Unlock()

	sortTokens(matched, keys)
	items, info := page(matched, offset, limit)
	writeJSON(w, http.StatusOK, astro.TokensPage{Tokens: items, PageInfo: info})
}

// createBody is CreateApiTokenRequest as the emulator accepts it.
type createBody struct {
	Name                    string      `json:"name"`
	Description             string      `json:"description"`
	Role                    string      `json:"role"`
	Scope                   astro.Scope `json:"scope"`
	EntityID                string      `json:"entityId"`
	TokenExpiryPeriodInDays *int        `json:"tokenExpiryPeriodInDays"`
	Kind                    string      `json:"kind"`
}

// entityHome checks the entityId of a WORKSPACE or DEPLOYMENT scoped
// token, which must name an existing entity of that kind (find says whether
// it exists), and returns the Workspace it lives in: the caller's rights are
// judged there.
func entityHome(id string, scope astro.Scope, kind string, fe *[]astro.FieldError, find func(id string) (home string, ok bool)) string {
	if id == "" {
		*fe = append(*fe, astro.FieldError{Code: CodeRequired, Field: "entityId", Message: fmt.Sprintf("is required for %s scope", scope)})
		return ""
	}
	home, ok := find(id)
	if !ok {
		*fe = append(*fe, astro.FieldError{Code: CodeNotFound, Field: "entityId", Message: "no such " + kind})
	}
	return home
}

func checkName(name string, fe *[]astro.FieldError) {
	switch n := utf8.RuneCountInString(name); {
	case n == 0:
		*fe = append(*fe, astro.FieldError{Code: CodeRequired, Field: "name", Message: "is required"})
	case n > MaxNameLen:
		*fe = append(*fe, astro.FieldError{Code: CodeTooLong, Field: "name", Message: fmt.Sprintf("must be at most %d characters", MaxNameLen)})
	}
}

func checkDescription(d string, fe *[]astro.FieldError) {
	if utf8.RuneCountInString(d) > MaxDescriptionLen {
		*fe = append(*fe, astro.FieldError{Code: CodeTooLong, Field: "description", Message: fmt.Sprintf("must be at most %d characters", MaxDescriptionLen)})
	}
}

// validateCreate checks b and returns the new token's role and the
// Workspace it belongs to ("" for ORGANIZATION scope). The caller holds mu
// (Deployments come and go).
func (e *Emulator) validateCreate(b *createBody) (astro.TokenRole, string, []astro.FieldError) {
	var fe []astro.FieldError
	checkName(b.Name, &fe)
	checkDescription(b.Description, &fe)
	if d := b.TokenExpiryPeriodInDays; d != nil && (*d < astro.MinExpiryDays || *d > astro.MaxExpiryDays) {
		fe = append(fe, astro.FieldError{Code: CodeOutOfRange, Field: "tokenExpiryPeriodInDays",
			Message: fmt.Sprintf("must be an integer from %d to %d", astro.MinExpiryDays, astro.MaxExpiryDays)})
	}
	// Astro has other token kinds (UNCONFIRMED which); the emulator mints
	// STANDARD tokens only.
	if b.Kind != "" && b.Kind != "STANDARD" {
		fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: "kind", Message: "must be STANDARD"})
	}
	role := astro.TokenRole{EntityID: b.EntityID, Role: b.Role}
	var home string
	switch b.Scope {
	case "":
		fe = append(fe, astro.FieldError{Code: CodeRequired, Field: "scope", Message: "is required"})
	case astro.ScopeOrganization:
		role.EntityType, role.EntityID = astro.EntityOrganization, e.org.ID
		if b.EntityID != "" && b.EntityID != e.org.ID {
			fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: "entityId", Message: "must be empty or the organization id for ORGANIZATION scope"})
		}
	case astro.ScopeWorkspace:
		role.EntityType = astro.EntityWorkspace
		home = entityHome(b.EntityID, b.Scope, "Workspace", &fe, func(id string) (string, bool) {
			_, ok := e.workspace(id)
			return id, ok
		})
	case astro.ScopeDeployment:
		role.EntityType = astro.EntityDeployment
		home = entityHome(b.EntityID, b.Scope, "Deployment", &fe, func(id string) (string, bool) {
			d, ok := e.deployment(id)
			if !ok {
				return "", false
			}
			return d.WorkspaceID, true
		})
	default:
		fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: "scope", Message: "must be ORGANIZATION, WORKSPACE or DEPLOYMENT"})
	}
	switch {
	case b.Role == "":
		fe = append(fe, astro.FieldError{Code: CodeRequired, Field: "role", Message: "is required"})
	case role.EntityType != "" && !astro.ValidRole(role.EntityType, b.Role):
		fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: "role", Message: fmt.Sprintf("is not a role for %s scope", b.Scope)})
	}
	return role, home, fe
}

// createToken serves POST /organizations/{org}/tokens: 200 (not 201) with
// the token and its value.
func (e *Emulator) createToken(w http.ResponseWriter, r *http.Request, p *principal) {
	var b createBody
	if he := decodeBody(w, r, &b); he != nil {
		he.write(w)
		return
	}
	now := e.clock()
	e.mu.Lock()
	role, home, fe := e.validateCreate(&b)
	var he *httpError
	switch {
	case len(fe) > 0:
		he = badRequest("invalid request body", fe...)
	case (b.Scope == astro.ScopeOrganization && !p.owner()) || (b.Scope != astro.ScopeOrganization && !p.canManage(home)):
		he = errForbidden
	}
	var t astro.Token
	if he == nil {
		var value string
		t, value = e.createLocked(newToken{
			name: b.Name, description: b.Description, scope: b.Scope,
			roles: []astro.TokenRole{role}, days: b.TokenExpiryPeriodInDays, by: p.subject(),
		}, now)
		t.Token = value
	}
	e.mu.Unlock()
	reply(w, he, t)
}

// lookupLocked finds the path's token and checks the caller may act on
// it. The caller holds mu.
func (e *Emulator) lookupLocked(r *http.Request, p *principal, manage bool) (*record, *httpError) {
	rec, ok := e.tokens[r.PathValue("token")]
	if !ok {
		return nil, errNotFound
	}
	if manage && !e.canManageToken(p, &rec.tok) || !manage && !e.canReadToken(p, &rec.tok) {
		return nil, errForbidden
	}
	return rec, nil
}

// getToken serves GET /organizations/{org}/tokens/{token}, never with the
// value.
func (e *Emulator) getToken(w http.ResponseWriter, r *http.Request, p *principal) {
	e.mu.Lock()
	rec, he := e.lookupLocked(r, p, false)
	var t astro.Token
	if he == nil {
		t = cloneToken(rec.tok)
	}
	e.mu.Unlock()
	reply(w, he, t)
}

// updateBody is the body of POST /tokens/{id}. An absent description keeps
// the current one (the emulator's reading); "" clears it.
type updateBody struct {
	Name        string  `json:"name"`
	Description *string `json:"description"`
}

// updateToken serves POST /organizations/{org}/tokens/{token}.
func (e *Emulator) updateToken(w http.ResponseWriter, r *http.Request, p *principal) {
	var b updateBody
	bodyErr := decodeBody(w, r, &b)
	if bodyErr == nil {
		var fe []astro.FieldError
		checkName(b.Name, &fe)
		if b.Description != nil {
			checkDescription(*b.Description, &fe)
		}
		if len(fe) > 0 {
			bodyErr = badRequest("invalid request body", fe...)
		}
	}
	now := e.clock()
	e.mu.Lock()
	rec, he := e.lookupLocked(r, p, true)
	if he == nil {
		he = bodyErr
	}
	var t astro.Token
	if he == nil {
		rec.tok.Name = b.Name
		if b.Description != nil {
			rec.tok.Description = *b.Description
		}
		rec.tok.UpdatedAt, rec.tok.UpdatedBy = now, p.subject()
		t = cloneToken(rec.tok)
	}
	e.mu.Unlock()
	reply(w, he, t)
}

// deleteToken serves DELETE /organizations/{org}/tokens/{token}: 204 with
// an empty body; the value gets 401 from the next request on.
func (e *Emulator) deleteToken(w http.ResponseWriter, r *http.Request, p *principal) {
	e.mu.Lock()
	rec, he := e.lookupLocked(r, p, true)
	if he == nil {
		delete(e.tokens, rec.tok.ID)
	}
	e.mu.Unlock()
	if he != nil {
		he.write(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// validateRoles checks a whole new role set for t. The rules, beyond the
// facts file's "minItems 1, each role valid for its entityType", are the
// emulator's reading: every entity exists and appears once; an
// Organization token keeps exactly one organization role; a Workspace or
// Deployment token keeps exactly one role, on its own Workspace or
// Deployment.
func (e *Emulator) validateRoles(t *astro.Token, roles []astro.TokenRole) []astro.FieldError {
	if len(roles) == 0 {
		return []astro.FieldError{{Code: CodeRequired, Field: "roles", Message: "must hold at least one role"}}
	}
	var fe []astro.FieldError
	seen := map[astro.TokenRole]bool{}
	orgRoles := 0
	for i, r := range roles {
		field := fmt.Sprintf("roles[%d]", i)
		switch r.EntityType {
		case astro.EntityOrganization:
			orgRoles++
			if r.EntityID != e.org.ID {
				fe = append(fe, astro.FieldError{Code: CodeNotFound, Field: field + ".entityId", Message: "is not this organization"})
			}
		case astro.EntityWorkspace:
			if _, ok := e.workspace(r.EntityID); !ok {
				fe = append(fe, astro.FieldError{Code: CodeNotFound, Field: field + ".entityId", Message: "no such Workspace"})
			}
		case astro.EntityDeployment:
			if _, ok := e.deployment(r.EntityID); !ok {
				fe = append(fe, astro.FieldError{Code: CodeNotFound, Field: field + ".entityId", Message: "no such Deployment"})
			}
		default:
			fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: field + ".entityType", Message: "must be ORGANIZATION, WORKSPACE or DEPLOYMENT"})
			continue
		}
		if !astro.ValidRole(r.EntityType, r.Role) {
			fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: field + ".role", Message: fmt.Sprintf("is not a role for %s", r.EntityType)})
		}
		key := astro.TokenRole{EntityID: r.EntityID, EntityType: r.EntityType}
		if seen[key] {
			fe = append(fe, astro.FieldError{Code: CodeDuplicate, Field: field, Message: "names an entity that already has a role"})
		}
		seen[key] = true
	}
	switch t.Scope {
	case astro.ScopeOrganization:
		if orgRoles != 1 {
			fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: "roles", Message: "an Organization token holds exactly one organization role"})
		}
	case astro.ScopeWorkspace, astro.ScopeDeployment:
		own := t.Roles[0]
		if len(roles) != 1 || roles[0].EntityType != own.EntityType || roles[0].EntityID != own.EntityID {
			fe = append(fe, astro.FieldError{Code: CodeInvalid, Field: "roles",
				Message: fmt.Sprintf("a %s token holds exactly one role, on its own %s", t.Scope, strings.ToLower(string(own.EntityType)))})
		}
	}
	return fe
}

// setRoles serves POST /organizations/{org}/tokens/{token}/roles: the whole
// set is replaced. The token's existing values keep their claims (minted
// at creation or rotation); authorization always uses the current roles.
func (e *Emulator) setRoles(w http.ResponseWriter, r *http.Request, p *principal) {
	var b astro.SetRolesRequest
	bodyErr := decodeBody(w, r, &b)
	now := e.clock()
	e.mu.Lock()
	rec, he := e.lookupLocked(r, p, true)
	if he == nil {
		he = bodyErr
	}
	if he == nil {
		if fe := e.validateRoles(&rec.tok, b.Roles); len(fe) > 0 {
			he = badRequest("invalid roles", fe...)
		}
	}
	var roles []astro.TokenRole
	if he == nil {
		rec.tok.Roles = append([]astro.TokenRole(nil), b.Roles...)
		rec.tok.UpdatedAt, rec.tok.UpdatedBy = now, p.subject()
		roles = rec.tok.Roles
	}
	sr := astro.SubjectRolesOf(roles)
	e.mu.Unlock()
	reply(w, he, sr)
}

// rotateToken serves POST /organizations/{org}/tokens/{token}/rotate. The
// record keeps its id, name, description, roles, startAt and endAt (the
// facts file's assumptions); the old value gets 401 at once because only
// the new value's hash is stored.
func (e *Emulator) rotateToken(w http.ResponseWriter, r *http.Request, p *principal) {
	now := e.clock()
	e.mu.Lock()
	rec, he := e.lookupLocked(r, p, true)
	var t astro.Token
	if he == nil {
		value := e.signLocked(&rec.tok, now)
		rec.hash = sha256Sum(value)
		rec.tok.ShortToken = shortToken(value)
		rec.tok.LastRotatedAt = &now
		rec.tok.UpdatedAt, rec.tok.UpdatedBy = now, p.subject()
		t = cloneToken(rec.tok)
		t.Token = value
	}
	e.mu.Unlock()
	reply(w, he, t)
}

// listOrganizations serves GET /organizations: an API token sees its own
// organization, with a non-null product (the CLI needs it).
func (e *Emulator) listOrganizations(w http.ResponseWriter, r *http.Request, _ *principal) {
	var offset, limit int
	if !readQuery(w, r, func(q url.Values, fe *[]astro.FieldError) { offset, limit = pageParams(q, fe) }) {
		return
	}
	orgs := []astro.Organization{e.org}
	items, info := page(orgs, offset, limit)
	writeJSON(w, http.StatusOK, astro.OrganizationsPage{Organizations: items, PageInfo: info})
}

// listWorkspaces serves GET /organizations/{org}/workspaces. An
// Organization token sees every Workspace; a Workspace token its own; a
// Deployment token none (the emulator's reading).
func (e *Emulator) listWorkspaces(w http.ResponseWriter, r *http.Request, p *principal) {
	var offset, limit int
	if !readQuery(w, r, func(q url.Values, fe *[]astro.FieldError) { offset, limit = pageParams(q, fe) }) {
		return
	}
	visible := make([]astro.Workspace, 0, len(e.workspaces))
	for _, ws := range e.workspaces {
		if p.scope == astro.ScopeOrganization || p.wsRank[ws.ID] > 0 {
			visible = append(visible, ws)
		}
	}
	items, info := page(visible, offset, limit)
	writeJSON(w, http.StatusOK, astro.WorkspacesPage{Workspaces: items, PageInfo: info})
}
