package sink

import (
	"errors"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The one set of naming rules for sink targets. [GitHubTarget.Validate] and
// [VaultTarget.Validate] apply them, and so does the policy parser
// (internal/policy), so that a policy never accepts a target its sink would
// refuse, nor refuses one GitHub or Vault would take. Where GitHub or Vault
// publish a rule, it is theirs; the few bounds of our own are marked.

var (
	// An account (user or organization) login: letters, digits and
	// hyphens, not starting with a hyphen, at most 39 characters. GitHub no
	// longer lets new names end in a hyphen or hold two in a row, but older
	// accounts do, so that is not refused.
	accountRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,38}$`)
	// A managed user of an Enterprise Managed Users enterprise is
	// "handle_shortcode": the one account login with an underscore. Such a
	// user can own repositories, not organizations.
	managedUserRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*_[A-Za-z0-9]+$`)
	// A repository name: ASCII letters, digits, '.', '-' and '_', at most
	// 100 characters; "." and ".." are refused separately.
	repoNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	// A secret name: letters, digits and underscores, not starting with a
	// digit. The GITHUB_ prefix is refused separately.
	secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

const (
	maxAccount     = 39
	maxEnvironment = 255
	// maxSecretName is our bound: GitHub publishes none.
	maxSecretName = 255
	// maxVaultName is our bound on a mount, a path or a field: Vault
	// publishes none.
	maxVaultName = 512
)

// ValidRepository reports whether s is "owner/name" as GitHub allows it: an
// account login (or a managed user's "handle_shortcode") and a repository
// name of ASCII letters, digits, '.', '-' and '_' that is not "." or "..".
func ValidRepository(s string) bool {
	owner, name, ok := strings.Cut(s, "/")
	validOwner := accountRE.MatchString(owner) || len(owner) <= maxAccount && managedUserRE.MatchString(owner)
	return ok && validOwner && repoNameRE.MatchString(name) && name != "." && name != ".."
}

// ValidOrganization reports whether s is an organization login: letters,
// digits and hyphens, not starting with a hyphen, at most 39 characters.
func ValidOrganization(s string) bool {
	return accountRE.MatchString(s)
}

// ValidEnvironment reports whether s can name a deployment environment:
// at most 255 characters (GitHub's limit), none of them a control
// character, and no leading or trailing space.
func ValidEnvironment(s string) bool {
	return s != "" && utf8.ValidString(s) && utf8.RuneCountInString(s) <= maxEnvironment &&
		strings.TrimSpace(s) == s && !strings.ContainsFunc(s, unicode.IsControl)
}

// ErrReservedSecretName is [CheckSecretName]'s answer to a name with the
// GITHUB_ prefix, which GitHub keeps for itself.
var ErrReservedSecretName = errors.New("the GITHUB_ prefix is reserved")

var (
	errSecretNameChars  = errors.New("only letters, digits and _, not starting with a digit")
	errSecretNameLength = errors.New("longer than 255 characters")
)

// CheckSecretName applies GitHub's rules for secret names: letters, digits
// and underscores, not starting with a digit nor with GITHUB_ (names are
// case-insensitive: [ErrReservedSecretName]); and ours, at most 255
// characters. The error says which rule s breaks, without repeating s.
func CheckSecretName(s string) error {
	switch {
	case !secretNameRE.MatchString(s):
		return errSecretNameChars
	case strings.HasPrefix(strings.ToUpper(s), "GITHUB_"):
		return ErrReservedSecretName
	case len(s) > maxSecretName:
		return errSecretNameLength
	}
	return nil
}

// CheckVaultPath applies the rules for a KV mount or a secret's path below
// it: segments separated by '/', none of them empty, "." or ".." (an HTTP
// path would resolve them and address another secret), no leading or
// trailing '/'. Vault allows any other character; control characters are
// refused here because Vault's CLI cannot address them and they would break
// log lines, and so are names longer than 512 bytes. The error says which
// rule s breaks, without repeating s.
func CheckVaultPath(s string) error {
	if err := checkVaultName(s); err != nil {
		return err
	}
	if strings.Trim(s, "/") != s {
		return errors.New("must not start or end with /")
	}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errors.New("has an empty, . or .. segment")
		}
	}
	return nil
}

// CheckVaultField applies the rules for the field of a secret that holds
// the value: one segment, as [CheckVaultPath] has them, without '/'.
func CheckVaultField(s string) error {
	if err := checkVaultName(s); err != nil {
		return err
	}
	if strings.Contains(s, "/") {
		return errors.New("must not contain /")
	}
	if s == "." || s == ".." {
		return errors.New("must not be . or ..")
	}
	return nil
}

func checkVaultName(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > maxVaultName:
		return errors.New("is longer than 512 bytes")
	case !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl):
		return errors.New("holds a control character or invalid UTF-8")
	}
	return nil
}
