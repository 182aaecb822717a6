package policy

import (
	_ "embed" // the policy's JSON Schema
)

// schemaJSON is a JSON Schema (draft 2020-12) of the policy file, for
// editors (the yaml-language-server comment of docs/examples/policy.yaml
// points at it) and for checks outside Go. It is written by hand and held
// to [Parse] by schema_test.go: every file Parse refuses for a value of
// the wrong type or an unknown key, the schema refuses too, and every
// example policy in docs/ passes both. Parse remains the authority: it
// also checks what a schema cannot say (that an identity constraint pins
// an owner, that a regex compiles, the range of a duration).
//
//go:embed schema.json
var schemaJSON []byte

// SchemaURL is where the schema is published, as the policies' $schema
// comments name it.
const SchemaURL = "https://raw.githubusercontent.com/astro-sts/astro-sts/main/internal/policy/schema.json"

// Schema returns the policy file's JSON Schema. Each call returns a copy.
func Schema() []byte { return append([]byte(nil), schemaJSON...) }
