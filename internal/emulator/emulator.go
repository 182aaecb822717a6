// Package emulator is an in-memory emulator of the token endpoints of the
// Astro API v1, and of the Deployment endpoints the astro CLI calls for
// `astro deployment list|inspect|create --deployment-file|delete` (what
// astronomer/deploy-action runs for preview Deployments), faithful enough
// that [astro.Client], the broker and the real astro CLI cannot tell it
// from Astro for what they use.
//
// It serves the paths, JSON shapes, status codes and error bodies of
// Astronomer's published v1 API specification, issues token values that are
// Ed25519-signed JWTs with the claims the astro CLI reads, and enforces
// what Astro enforces: revoked, rotated and expired values get 401 at once,
// a Workspace token stays inside its Workspace, only a Workspace Operator or
// Owner creates and deletes Deployments, role names, expiry bounds and
// Deployment configurations are validated. Where the facts are silent, the comment at the code says
// which reading the emulator takes; docs/emulator.md lists them all.
//
// Tests use it in-process through [Start]; `astro-sts emulator` serves it
// on 127.0.0.1:8888, where the astro CLI looks for the API of the domain
// localhost.
package emulator

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// Config configures an [Emulator]. The zero value is a working emulator
// with two Workspaces and no injected faults.
type Config struct {
	// Workspaces is the number of seeded Workspaces (each with one seeded
	// Dedicated Deployment on the seeded cluster); 0 means 2, at most
	// [MaxWorkspaces].
	Workspaces int
	// Now is the clock; nil means time.Now. Timestamps are stored and sent
	// in UTC, truncated to whole seconds, as Astro sends them.
	Now func() time.Time
	// Latency is added to every request, to make a benchmark see a network.
	Latency time.Duration
	// ErrorRate (0..1) is the share of requests answered 503 with the error
	// body before they are processed.
	ErrorRate float64
	// Seed makes ids, the signing key and ErrorRate's choices reproducible;
	// 0 means random.
	Seed int64
	// Logger receives one Debug record per request (never a token value);
	// nil discards.
	Logger *slog.Logger
	// RecordCreates keeps the id of every token created, for
	// [Emulator.Created]: a test that must account for every token ever
	// made, deleted since or not, turns it on.
	RecordCreates bool
	// CreateDelay makes every token create late: the token is made
	// CreateDelay after the request arrived, whether or not the caller
	// still waits, and a caller that waits gets the answer then. That is
	// an Astro that finishes a create after the client gave up (see
	// faults.go).
	CreateDelay time.Duration
}

// MaxWorkspaces bounds [Config.Workspaces].
const MaxWorkspaces = 1000

// ErrInvalidConfig is returned by [New] for a config it refuses.
var ErrInvalidConfig = errors.New("emulator: invalid config")

// Emulator holds the state of one emulated organization. It is safe for
// concurrent use: one mutex guards the state, held for map work and, on a
// create or rotate, the Ed25519 signature of the new value; the latency
// knob waits outside it.
type Emulator struct {
	now     func() time.Time
	latency time.Duration
	errRate float64
	log     *slog.Logger
	handler http.Handler

	// createDelay is [Config.CreateDelay] (faults.go).
	createDelay time.Duration

	// Fixed after New.
	priv       ed25519.PrivateKey
	pub        ed25519.PublicKey
	kid        string
	header     string // base64url of the one JWS header the emulator issues
	org        astro.Organization
	workspaces []astro.Workspace
	cluster    astro.Cluster
	seededDeps []string // ids of the seeded Deployments, in Workspace order
	ownerValue string
	reqPrefix  string
	reqSeq     atomic.Uint64

	mu          sync.Mutex
	rng         *mrand.Rand // ids and ErrorRate draws
	tokens      map[string]*record
	deployments map[string]*astro.Deployment // never mutated once stored: replaced or deleted whole
	throttle    int
	retryAft    time.Duration
	// Faults after processing (faults.go): every answer held this long,
	// and the share of answers lost.
	slowAnswers time.Duration
	loseRate    float64
	created     *[]string // with Config.RecordCreates: every id created
}

// record is a token as the emulator stores it: never the value, only its
// SHA-256.
type record struct {
	tok  astro.Token // Token field always empty
	hash [sha256.Size]byte
}

// New returns an emulator seeded with one organization
// ("astro-sts-emulator", product HOSTED), one Dedicated cluster,
// cfg.Workspaces Workspaces with one Deployment each on that cluster, and
// an ORGANIZATION_OWNER token that never expires.
func New(cfg Config) (*Emulator, error) {
	var errs []error
	if cfg.Workspaces < 0 || cfg.Workspaces > MaxWorkspaces {
		errs = append(errs, fmt.Errorf("workspaces must be 0..%d", MaxWorkspaces))
	}
	if cfg.Latency < 0 {
		errs = append(errs, errors.New("latency must not be negative"))
	}
	if cfg.CreateDelay < 0 {
		errs = append(errs, errors.New("create delay must not be negative"))
	}
	if math.IsNaN(cfg.ErrorRate) || cfg.ErrorRate < 0 || cfg.ErrorRate > 1 {
		errs = append(errs, errors.New("error rate must be within 0..1"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	if cfg.Workspaces == 0 {
		cfg.Workspaces = 2
	}

	seed := uint64(cfg.Seed)
	var keySeed [32]byte
	if seed == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("emulator: seed: %w", err)
		}
		seed = binary.LittleEndian.Uint64(b[:])
		if _, err := rand.Read(keySeed[:]); err != nil {
			return nil, fmt.Errorf("emulator: key: %w", err)
		}
	} else {
		keySeed = sha256.Sum256(binary.LittleEndian.AppendUint64([]byte("astro-sts emulator key"), seed))
	}
	priv := ed25519.NewKeyFromSeed(keySeed[:])
	pub := priv.Public().(ed25519.PublicKey)
	kidSum := sha256.Sum256(pub)

	e := &Emulator{
		now:     cfg.Now,
		latency: cfg.Latency,
		errRate: cfg.ErrorRate,
		log:     cfg.Logger,
		priv:    priv,
		pub:     pub,
		kid:     hex.EncodeToString(kidSum[:8]),
		rng:     mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		tokens:  map[string]*record{},

		deployments: map[string]*astro.Deployment{},
		createDelay: cfg.CreateDelay,
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.header = jwsHeader(e.kid)
	e.reqPrefix = e.newID()[2:10]

	t := e.clock()
	// The order of the newID calls below is part of the contract: a fixed
	// Seed gives the same Workspace and Deployment ids across versions
	// (the demo's sample policy names one), so anything seeded later draws
	// its ids after the owner token.
	e.org = astro.Organization{ID: e.newID(), Name: "astro-sts-emulator", Product: "HOSTED", Stamps: astro.Stamps{CreatedAt: t, UpdatedAt: t}}
	depIDs := make([]string, cfg.Workspaces)
	for i := range cfg.Workspaces {
		ws := astro.Workspace{ID: e.newID(), Name: fmt.Sprintf("workspace-%d", i+1), OrganizationID: e.org.ID, Stamps: astro.Stamps{CreatedAt: t, UpdatedAt: t}}
		e.workspaces = append(e.workspaces, ws)
		depIDs[i] = e.newID()
	}
	seedUser := &astro.Subject{ID: e.newID(), SubjectType: "USER", FullName: "Emulator Seed", Username: "seed@emulator.invalid"}
	_, value := e.createLocked(newToken{
		name:        "astro-sts-emulator owner",
		description: "seeded by the emulator; never expires",
		scope:       astro.ScopeOrganization,
		roles:       []astro.TokenRole{{EntityID: e.org.ID, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationOwner}},
		by:          seedUser,
	}, t)
	e.ownerValue = value
	e.seedDeployments(depIDs, *seedUser, t)
	if cfg.RecordCreates { // after the seeded tokens: only what clients create
		e.created = &[]string{}
	}
	e.handler = e.routes()
	return e, nil
}

// clock returns now in UTC truncated to the second: the precision Astro
// sends, so that what is stored is exactly what a client reads back.
func (e *Emulator) clock() time.Time { return e.now().UTC().Truncate(time.Second) }

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newID returns an id shaped like Astro's cuids: "cl" and 23 lowercase
// alphanumerics. The caller holds mu, or is New before the emulator is
// shared.
func (e *Emulator) newID() string {
	var b [25]byte
	b[0], b[1] = 'c', 'l'
	for i := 2; i < len(b); i++ {
		b[i] = idAlphabet[e.rng.IntN(len(idAlphabet))]
	}
	return string(b[:])
}

// Handler serves the API under /v1.
func (e *Emulator) Handler() http.Handler { return e.handler }

// OrganizationID is the id of the one seeded organization.
func (e *Emulator) OrganizationID() string { return e.org.ID }

// OrganizationToken is the value of the seeded ORGANIZATION_OWNER token,
// which never expires (unless it is rotated or deleted through the API).
func (e *Emulator) OrganizationToken() string { return e.ownerValue }

// WorkspaceIDs are the ids of the seeded Workspaces.
func (e *Emulator) WorkspaceIDs() []string {
	out := make([]string, len(e.workspaces))
	for i, w := range e.workspaces {
		out[i] = w.ID
	}
	return out
}

// DeploymentIDs are the ids of the seeded Deployments, one per Workspace,
// in the order of [Emulator.WorkspaceIDs] (whether or not they have been
// deleted through the API since).
func (e *Emulator) DeploymentIDs() []string { return slices.Clone(e.seededDeps) }

// ClusterID is the id of the seeded cluster, where the seeded Deployments
// run.
func (e *Emulator) ClusterID() string { return e.cluster.ID }

// PublicKey is the Ed25519 key that signs token values, for tests that
// want to verify one.
func (e *Emulator) PublicKey() ed25519.PublicKey { return slices.Clone(e.pub) }

// Throttle makes the next n requests fail with 429 and a Retry-After of
// retryAfter rounded up to whole seconds, as a rate limiter in front of
// Astro would. n <= 0 turns throttling off.
func (e *Emulator) Throttle(n int, retryAfter time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.throttle = max(n, 0)
	e.retryAft = max(retryAfter, 0)
}

// Tokens returns a snapshot of all live tokens (never their values),
// ordered by createdAt then id, for assertions in tests.
func (e *Emulator) Tokens() []astro.Token {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]astro.Token, 0, len(e.tokens))
	for _, r := range e.tokens {
		out = append(out, cloneToken(r.tok))
	}
	sortTokens(out, nil)
	return out
}

func cloneToken(t astro.Token) astro.Token {
	t.Roles = slices.Clone(t.Roles)
	t.EndAt = clonePtr(t.EndAt)
	t.ExpiryPeriodInDays = clonePtr(t.ExpiryPeriodInDays)
	t.LastUsedAt = clonePtr(t.LastUsedAt)
	t.LastRotatedAt = clonePtr(t.LastRotatedAt)
	t.CreatedBy = clonePtr(t.CreatedBy)
	t.UpdatedBy = clonePtr(t.UpdatedBy)
	return t
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func (e *Emulator) workspace(id string) (astro.Workspace, bool) {
	for _, w := range e.workspaces {
		if w.ID == id {
			return w, true
		}
	}
	return astro.Workspace{}, false
}

// deployment looks a live Deployment up. The caller holds mu.
func (e *Emulator) deployment(id string) (*astro.Deployment, bool) {
	d, ok := e.deployments[id]
	return d, ok
}

// homeWorkspace is the Workspace a Workspace or Deployment token belongs
// to; "" for an Organization token. The caller holds mu.
func (e *Emulator) homeWorkspace(t *astro.Token) string {
	for _, r := range t.Roles {
		switch {
		case t.Scope == astro.ScopeWorkspace && r.EntityType == astro.EntityWorkspace:
			return r.EntityID
		case t.Scope == astro.ScopeDeployment && r.EntityType == astro.EntityDeployment:
			if d, ok := e.deployment(r.EntityID); ok {
				return d.WorkspaceID
			}
		}
	}
	return ""
}

// newToken is what createLocked needs to mint a token.
type newToken struct {
	name, description string
	scope             astro.Scope
	roles             []astro.TokenRole
	days              *int
	by                *astro.Subject
}

// createLocked stores a new token and returns it with its value. The
// caller holds mu (or is New). Signing happens under the lock: an Ed25519
// signature costs tens of microseconds, far below anything a broker
// benchmark measures, and it keeps create atomic.
func (e *Emulator) createLocked(n newToken, now time.Time) (astro.Token, string) {
	t := astro.Token{
		ID:          e.newID(),
		Name:        n.name,
		Description: n.description,
		Scope:       n.scope,
		StartAt:     now,
		Stamps:      astro.Stamps{CreatedAt: now, UpdatedAt: now},
		Roles:       slices.Clone(n.roles),
		CreatedBy:   clonePtr(n.by),
		UpdatedBy:   clonePtr(n.by),
	}
	if n.days != nil {
		d := *n.days
		end := now.Add(time.Duration(d) * 24 * time.Hour)
		t.EndAt, t.ExpiryPeriodInDays = &end, &d
	}
	value := e.signLocked(&t, now)
	t.ShortToken = shortToken(value)
	e.tokens[t.ID] = &record{tok: t, hash: sha256Sum(value)}
	if e.created != nil {
		*e.created = append(*e.created, t.ID)
	}
	return cloneToken(t), value
}

func sha256Sum(value string) [sha256.Size]byte { return sha256.Sum256([]byte(value)) }

// shortToken is the emulator's reading of Astro's shortToken, which the
// facts file does not describe: the last 7 characters of the value (the
// signature's end; the start of every JWT is the same header).
func shortToken(value string) string {
	return value[len(value)-7:]
}

func sortTokens(ts []astro.Token, keys []sortKey) {
	slices.SortStableFunc(ts, func(a, b astro.Token) int {
		for _, k := range keys {
			if c := k.compare(&a, &b); c != 0 {
				return c
			}
		}
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}
