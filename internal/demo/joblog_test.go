package demo

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadJobLog(t *testing.T) {
	tests := []struct {
		name   string
		stdout string
		want   jobLog
	}{
		{name: "empty", stdout: "", want: jobLog{}},
		{
			name:   "plain lines pass through",
			stdout: "hello\nworld\n",
			want:   jobLog{Lines: []string{"hello", "world"}},
		},
		{
			name:   "a mask hides its value in later lines only",
			stdout: "early s3cret\n::add-mask::s3cret\nlate s3cret and s3cret\n",
			want:   jobLog{Lines: []string{"early s3cret", "late *** and ***"}, Masks: []string{"s3cret"}},
		},
		{
			name:   "annotations are shown as the runner shows them, masked",
			stdout: "::add-mask::abc\n::error::bad abc\n::warning file=a.go,line=1::careful\n::notice::fyi\n",
			want:   jobLog{Lines: []string{"Error: bad ***", "Warning: careful", "Notice: fyi"}, Masks: []string{"abc"}},
		},
		{
			name:   "escaped data is unescaped before masking and display",
			stdout: "::add-mask::a%25b\n::error::one%0Atwo a%b\n",
			want:   jobLog{Lines: []string{"Error: one", "two ***"}, Masks: []string{"a%b"}},
		},
		{
			name:   "debug, unknown commands and empty masks vanish",
			stdout: "::debug::x\n::set-output name=a::b\n::add-mask::\nend\n",
			want:   jobLog{Lines: []string{"end"}},
		},
		{
			name:   "text that only looks like a command is printed",
			stdout: "::no closing\n:: ::x\n",
			want:   jobLog{Lines: []string{"::no closing", ":: ::x"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, readJobLog(tt.stdout)); diff != "" {
				t.Errorf("readJobLog (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckMasked(t *testing.T) {
	tests := []struct {
		name    string
		stdout  string
		wantErr bool
		wantIs  error
	}{
		{name: "masked first", stdout: "::add-mask::tok\nusing tok\n"},
		{name: "never printed, but masked", stdout: "::add-mask::tok\n"},
		{name: "printed before the mask", stdout: "tok\n::add-mask::tok\n", wantErr: true, wantIs: errShown},
		{name: "never masked", stdout: "hello\n", wantErr: true},
		{name: "another value masked", stdout: "::add-mask::other\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkMasked(readJobLog(tt.stdout), "tok")
			if (err != nil) != tt.wantErr {
				t.Fatalf("checkMasked = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("checkMasked = %v, want %v", err, tt.wantIs)
			}
		})
	}
}

// FuzzReadJobLog checks the property the demo relies on: once a value is
// masked, no later displayed line shows it, whatever the step prints. A
// value with "*" or a line break is left out: "***" itself could spell it,
// and the runner masks a multi-line value line by line.
func FuzzReadJobLog(f *testing.F) {
	f.Add("s3cret", "x s3cret y\n::error::s3cret%0As3cret\n")
	f.Add("a%b", "::warning::a%25b\n")
	f.Add("ab", "aab\nabab\n::add-mask::b\n")
	f.Fuzz(func(t *testing.T, secret, after string) {
		if secret == "" || strings.ContainsAny(secret, "*\n") {
			t.Skip()
		}
		escaped := strings.NewReplacer("%", "%25", "\r", "%0D").Replace(secret)
		l := readJobLog("::add-mask::" + escaped + "\n" + after)
		if err := checkMasked(l, secret); err != nil {
			t.Fatalf("checkMasked after masking %q: %v\nlines: %q", secret, err, l.Lines)
		}
	})
}
