package emulator

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// Claims are the JWT claims of an emulated token value: the registered
// claims and the custom ones the astro CLI reads (org_id, scope,
// permissions, version, isAstronomerGenerated, kid, apiTokenId).
type Claims struct {
	Issuer                string   `json:"iss"`
	Subject               string   `json:"sub"`
	Audience              string   `json:"aud"`
	IssuedAt              int64    `json:"iat"`
	NotBefore             int64    `json:"nbf"`
	Expiry                int64    `json:"exp"`
	ID                    string   `json:"jti"`
	OrgID                 string   `json:"org_id"`
	Scope                 string   `json:"scope"`
	Permissions           []string `json:"permissions"`
	Version               string   `json:"version"`
	IsAstronomerGenerated bool     `json:"isAstronomerGenerated"`
	KeyID                 string   `json:"kid"`
	APITokenID            string   `json:"apiTokenId"`
}

// Issuer and Audience of emulated token values. The CLI does not check
// them; they are Astro's to keep the values look-alike.
const (
	Issuer   = "https://api.astronomer.io"
	Audience = "astronomer-ee"
)

// neverExpires is how far in the future exp is put for a token without an
// expiry. The CLI rejects a value whose exp is missing or past, and the
// facts do not say what Astro puts there (UNCONFIRMED); the longest expiry
// Astro allows (3650 days) after startAt keeps the CLI working for as long
// as any real token could.
const neverExpires = astro.MaxExpiryDays * 24 * time.Hour

// maxValueLen bounds what the verifier looks at; real values are < 1 KiB.
const maxValueLen = 8 << 10

var b64 = base64.RawURLEncoding

// jwsHeader returns the base64url JWS header. The emulator issues exactly
// this header and accepts nothing else, so there is no algorithm to
// confuse.
func jwsHeader(kid string) string {
	h, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{"EdDSA", kid, "JWT"})
	return b64.EncodeToString(h)
}

// claimsFor builds the claims of a new value of t, issued at now.
func (e *Emulator) claimsFor(t *astro.Token, now time.Time) Claims {
	exp := t.StartAt.Add(neverExpires)
	if t.EndAt != nil {
		exp = *t.EndAt
	}
	perms := []string{"organizationId:" + e.org.ID}
	for _, r := range t.Roles {
		switch r.EntityType {
		case astro.EntityWorkspace:
			perms = append(perms, "workspaceId:"+r.EntityID)
		case astro.EntityDeployment:
			perms = append(perms, "deploymentId:"+r.EntityID)
		}
	}
	return Claims{
		Issuer:                Issuer,
		Subject:               t.ID,
		Audience:              Audience,
		IssuedAt:              now.Unix(),
		NotBefore:             now.Unix(),
		Expiry:                exp.Unix(),
		ID:                    e.newID(),
		OrgID:                 e.org.ID,
		Scope:                 string(t.Scope),
		Permissions:           perms,
		Version:               "1",
		IsAstronomerGenerated: true,
		KeyID:                 e.kid,
		APITokenID:            t.ID,
	}
}

// signLocked mints a new value for t. The caller holds mu (newID).
func (e *Emulator) signLocked(t *astro.Token, now time.Time) string {
	c := e.claimsFor(t, now)
	// Claims holds only strings, integers and a bool: Marshal cannot fail.
	payload, _ := json.Marshal(c)
	input := e.header + "." + b64.EncodeToString(payload)
	return input + "." + b64.EncodeToString(ed25519.Sign(e.priv, []byte(input)))
}

// errBadValue is the one error of valueTokenID: a caller learns nothing
// about why a value was refused.
var errBadValue = errors.New("invalid API token")

// valueTokenID returns the apiTokenId of a value shaped like the ones this
// emulator issues (its one header, a payload, a 64-byte signature), without
// checking the signature: what authenticates a value is that its SHA-256 is
// the one stored for that token ([Emulator.principalFor]), which holds for
// exactly the value the emulator issued and last handed out. An Ed25519
// verification on top could refuse nothing that comparison accepts, and it
// cost a third of the emulator's CPU per request, which every broker
// benchmark shares the cores with.
func (e *Emulator) valueTokenID(value string) (string, error) {
	if len(value) > maxValueLen {
		return "", errBadValue
	}
	header, rest, ok := strings.Cut(value, ".")
	if !ok || header != e.header {
		return "", errBadValue
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") || b64.DecodedLen(len(sig)) != ed25519.SignatureSize {
		return "", errBadValue
	}
	raw, err := b64.DecodeString(payload)
	if err != nil {
		return "", errBadValue
	}
	var c struct {
		APITokenID string `json:"apiTokenId"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.APITokenID == "" {
		return "", errBadValue
	}
	return c.APITokenID, nil
}

// ParseClaims decodes the claims of a value without verifying it, the way
// the astro CLI reads them. For tests and tools; never for authentication.
func ParseClaims(value string) (Claims, error) {
	parts := strings.Split(value, ".")
	if len(parts) != 3 {
		return Claims{}, errors.New("emulator: not a compact JWS")
	}
	raw, err := b64.DecodeString(parts[1])
	if err != nil {
		return Claims{}, errors.New("emulator: payload is not base64url")
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil {
		return Claims{}, errors.New("emulator: payload is not a JSON object of claims")
	}
	return c, nil
}
