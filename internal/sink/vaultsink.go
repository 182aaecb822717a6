package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// vaultWriteAttempts is how many times [VaultSink.Write] reads and writes
// under check-and-set before it reports [ErrConflict]: the first attempt
// and two re-reads.
const vaultWriteAttempts = 3

// VaultTarget is one field of a KV v2 secret: Field of the secret at Path in
// the KV v2 engine mounted at Mount ("secret", "astro/airflow-ci", "token").
type VaultTarget struct {
	Mount string
	Path  string
	Field string
}

// String is "mount/path#field".
func (t VaultTarget) String() string {
	return t.Mount + "/" + t.Path + "#" + t.Field
}

// Validate reports every problem with the target at once, by the rules of
// [CheckVaultPath] and [CheckVaultField].
func (t VaultTarget) Validate() error {
	var errs []error
	for _, c := range []struct {
		name, value string
		check       func(string) error
	}{{"mount", t.Mount, CheckVaultPath}, {"path", t.Path, CheckVaultPath}, {"field", t.Field, CheckVaultField}} {
		switch err := c.check(c.value); {
		case c.value == "":
			errs = append(errs, fmt.Errorf("%w: vault target: %s is required", ErrInvalidConfig, c.name))
		case err != nil:
			errs = append(errs, fmt.Errorf("%w: vault target: %s %q %v", ErrInvalidConfig, c.name, c.value, err))
		}
	}
	return errors.Join(errs...)
}

// VaultSink writes one field of a KV v2 secret, keeping the secret's other
// fields, and records the rotation in the secret's custom_metadata.
//
// Every write is a check-and-set against the version read just before, so
// two writers never silently overwrite each other: the loser re-reads and
// tries again, and reports [ErrConflict] if it keeps losing.
//
// A VaultSink remembers, in memory only, the secret as its first Write found
// it, so that [VaultSink.Restore] can put that back: make one per rotation
// run.
type VaultSink struct {
	client *vaultapi.Client
	target VaultTarget

	mu       sync.Mutex
	previous *VaultState // before the first Write; nil until then
	version  string      // the version the last Write's value landed in
}

var _ Sink = (*VaultSink)(nil)

// NewVaultSink returns a sink writing target with client (from
// [NewVaultClient]). The target is checked on every write; call
// [VaultTarget.Validate] at load time to find a bad one earlier.
func NewVaultSink(client *vaultapi.Client, target VaultTarget) *VaultSink {
	return &VaultSink{client: client, target: target}
}

// Kind is "vault".
func (s *VaultSink) Kind() string { return KindVault }

// Target is "mount/path#field".
func (s *VaultSink) Target() string { return s.target.String() }

// VaultState is a KV v2 secret as [VaultSink.Current] read it.
type VaultState struct {
	// Version is the secret's current version; 0 when it does not exist.
	Version int
	// Data is the current version's data; empty when the secret does not
	// exist or its current version is deleted or destroyed.
	Data map[string]any
	// CustomMetadata is the secret's custom_metadata.
	CustomMetadata map[string]string
}

// ErrNothingToRestore is [VaultSink.Restore]'s answer when there is no
// previous value to put back: nothing was written, the field was empty
// before, or someone else changed the secret since. The secret is left as
// it is.
var ErrNothingToRestore = errors.New("no previous value to restore")

// Preflight reads the secret as Write will (metadata, then data): a Vault
// that is down, a login that is refused or a policy that denies reading
// fails here, before anything changes. The rotation calls it before it
// rotates or creates a token.
func (s *VaultSink) Preflight(ctx context.Context) error {
	_, err := s.Current(ctx)
	return err
}

// Write sets the target field to value under check-and-set, then records m in
// custom_metadata. When the field already holds value (a retried Write whose
// first attempt landed), no new version is written. version is the KV
// version number that holds value; it is also returned, with the error,
// when only the metadata write failed, and retrying Write then completes
// the metadata without a new version.
func (s *VaultSink) Write(ctx context.Context, value string, m Metadata) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	version, err := s.write(ctx, value, m)
	if version != "" {
		// The value landed, even if the metadata write after it failed.
		s.version = version
	}
	return version, err
}

// Restore writes the field's value from before the first Write back, with
// the custom_metadata of the rotation before it, provided the secret is
// still at the version the last Write made (another writer's later change
// is left alone). It returns the version that holds the previous value
// again, or [ErrNothingToRestore].
func (s *VaultSink) Restore(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.version == "" || s.previous == nil {
		return "", ErrNothingToRestore
	}
	old, ok := s.previous.Data[s.target.Field].(string)
	if !ok || old == "" {
		return "", fmt.Errorf("%w: the field was empty before", ErrNothingToRestore)
	}
	now, err := s.Current(ctx)
	if err != nil {
		return "", err
	}
	if strconv.Itoa(now.Version) != s.version {
		return "", fmt.Errorf("%w: the secret moved on to version %d since this run wrote version %s", ErrNothingToRestore, now.Version, s.version)
	}
	meta := Metadata{
		TokenID:  s.previous.CustomMetadata[MetaTokenID],
		Strategy: s.previous.CustomMetadata[MetaStrategy],
	}
	if at, err := time.Parse(time.RFC3339, s.previous.CustomMetadata[MetaRotatedAt]); err == nil {
		meta.RotatedAt = at
	}
	version, err := s.write(ctx, old, meta)
	if version != "" {
		// The old value is back even if its metadata is not: a retry then
		// finds the secret at this version and only writes the metadata.
		s.version = version
	}
	return version, err
}

// write is Write without the bookkeeping of the last version; it remembers
// the secret as the first read found it, for Restore.
func (s *VaultSink) write(ctx context.Context, value string, m Metadata) (string, error) {
	if err := s.target.Validate(); err != nil {
		return "", err
	}
	if err := s.checkMount(ctx); err != nil {
		return "", err
	}
	var (
		state   VaultState
		version int
		err     error
	)
	for attempt := 1; ; attempt++ {
		if state, err = s.Current(ctx); err != nil {
			return "", err
		}
		if s.previous == nil {
			first := state
			s.previous = &first
		}
		if cur, ok := state.Data[s.target.Field].(string); ok && cur == value {
			version = state.Version
			break
		}
		data := maps.Clone(state.Data)
		if data == nil {
			data = map[string]any{}
		}
		data[s.target.Field] = value
		version, err = s.WriteCAS(ctx, state.Version, data)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrConflict) || attempt == vaultWriteAttempts {
			return "", err
		}
	}
	if err := s.writeMetadata(ctx, state.CustomMetadata, m); err != nil {
		return strconv.Itoa(version), err
	}
	return strconv.Itoa(version), nil
}

// Current reads the secret's current version, data and custom_metadata.
// Reading metadata first (rather than the latest data) gives the version to
// check-and-set against even when the latest version is deleted.
func (s *VaultSink) Current(ctx context.Context) (VaultState, error) {
	var st VaultState
	meta, err := s.client.Logical().ReadWithContext(ctx, s.apiPath("metadata"))
	if err != nil {
		return st, s.err("read", err)
	}
	if meta == nil || meta.Data == nil {
		return st, nil
	}
	if st.Version, err = intField(meta.Data, "current_version"); err != nil {
		return st, s.err("read", err)
	}
	st.CustomMetadata = map[string]string{}
	if cm, ok := meta.Data["custom_metadata"].(map[string]any); ok {
		for k, v := range cm {
			if sv, ok := v.(string); ok {
				st.CustomMetadata[k] = sv
			}
		}
	}
	if st.Version == 0 {
		return st, nil
	}
	// A deleted or destroyed version answers 404 with no data, which
	// leaves Data empty: the next version starts afresh.
	sec, err := s.client.Logical().ReadWithDataWithContext(ctx, s.apiPath("data"),
		map[string][]string{"version": {strconv.Itoa(st.Version)}})
	if err != nil {
		return st, s.err("read", err)
	}
	if sec != nil {
		if d, ok := sec.Data["data"].(map[string]any); ok {
			st.Data = d
		}
	}
	return st, nil
}

// WriteCAS writes data as the secret's next version, provided its current
// version is still version (0: the secret must not exist yet), and returns
// the new version. When another writer got there first it returns an
// [*Error] of kind [ErrConflict] and writes nothing.
//
// [VaultSink.Write] is built on it; it is exported so that a caller (and a
// test) can drive the read and the write separately.
func (s *VaultSink) WriteCAS(ctx context.Context, version int, data map[string]any) (int, error) {
	sec, err := s.client.Logical().WriteWithContext(ctx, s.apiPath("data"), map[string]any{
		"data":    data,
		"options": map[string]any{"cas": version},
	})
	if err != nil {
		// Vault reports a check-and-set mismatch as a plain 400 whose only
		// distinguishing mark is its wording. Rather than match the text,
		// look at the state: if the version moved, we lost a race.
		var re *vaultapi.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			if now, rerr := s.Current(ctx); rerr == nil && now.Version != version {
				return 0, &Error{Sink: KindVault, Target: s.Target(), Op: "write", Kind: ErrConflict,
					Err: fmt.Errorf("version is %d, expected %d", now.Version, version)}
			}
		}
		return 0, s.err("write", err)
	}
	if sec == nil {
		return 0, s.err("write", errors.New("the answer holds no version (is the mount KV v2?)"))
	}
	v, err := intField(sec.Data, "version")
	if err != nil {
		return 0, s.err("write", err)
	}
	return v, nil
}

// writeMetadata merges our three keys into the secret's custom_metadata.
// Posting only custom_metadata leaves max_versions, cas_required and
// delete_version_after untouched; the other custom keys are kept by merging
// them in from the read. Vault refuses empty values, so an empty field of m
// removes our key rather than leave a previous rotation's value behind.
func (s *VaultSink) writeMetadata(ctx context.Context, existing map[string]string, m Metadata) error {
	cm := make(map[string]any, len(existing)+3)
	for k, v := range existing {
		cm[k] = v
	}
	rotatedAt := ""
	if !m.RotatedAt.IsZero() {
		rotatedAt = m.RotatedAt.UTC().Format(time.RFC3339)
	}
	for k, v := range map[string]string{MetaTokenID: m.TokenID, MetaStrategy: m.Strategy, MetaRotatedAt: rotatedAt} {
		if v == "" {
			delete(cm, k)
		} else {
			cm[k] = v
		}
	}
	_, err := s.client.Logical().WriteWithContext(ctx, s.apiPath("metadata"), map[string]any{"custom_metadata": cm})
	if err != nil {
		return s.err("metadata", err)
	}
	return nil
}

// checkMount refuses a mount that is not KV v2. Writing "data/<path>" to a
// KV v1 mount would succeed and create a stray secret, so this is checked
// before anything is written. Vault's default policy allows the lookup for
// any path the token can reach.
func (s *VaultSink) checkMount(ctx context.Context) error {
	sec, err := s.client.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+s.target.Mount+"/"+s.target.Path)
	if err != nil {
		return s.err("mount", err)
	}
	if sec == nil {
		return &Error{Sink: KindVault, Target: s.Target(), Op: "mount", Kind: ErrNotFound, Err: fmt.Errorf("no mount at %s", s.target.Mount)}
	}
	mountPath, _ := sec.Data["path"].(string)
	typ, _ := sec.Data["type"].(string)
	opts, _ := sec.Data["options"].(map[string]any)
	version, _ := opts["version"].(string)
	if strings.TrimSuffix(mountPath, "/") != s.target.Mount {
		return &Error{Sink: KindVault, Target: s.Target(), Op: "mount", Kind: ErrInvalidConfig,
			Err: fmt.Errorf("the path belongs to mount %q, not %q", mountPath, s.target.Mount)}
	}
	if (typ != "kv" && typ != "generic") || version != "2" {
		return &Error{Sink: KindVault, Target: s.Target(), Op: "mount", Kind: ErrInvalidConfig,
			Err: fmt.Errorf("mount %s is %s version %q, not KV version 2", s.target.Mount, typ, version)}
	}
	return nil
}

func (s *VaultSink) apiPath(kind string) string {
	return s.target.Mount + "/" + kind + "/" + s.target.Path
}

func (s *VaultSink) err(op string, err error) error {
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	return &Error{Sink: KindVault, Target: s.Target(), Op: op, Kind: vaultKind(err), Err: vaultCause(err)}
}

// intField reads an integer that vaultapi decoded as json.Number.
func intField(m map[string]any, key string) (int, error) {
	switch v := m[key].(type) {
	case json.Number:
		n, err := strconv.Atoi(v.String())
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		return n, nil
	case float64:
		return int(v), nil
	case int:
		return v, nil
	default:
		return 0, fmt.Errorf("the answer has no integer %s", key)
	}
}
