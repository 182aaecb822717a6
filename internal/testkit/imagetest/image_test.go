package imagetest_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// maxImageSize is the action image's budget: every job that uses the
// action pulls it (the release workflow checks the same number). 15 MB
// as Docker counts them (10^6 bytes), the size `docker images` shows.
const maxImageSize = 15_000_000

func TestImageSize(t *testing.T) {
	_, img := needImage(t)
	t.Logf("image %s: %d bytes (%.1f MiB), built in %s", img.Ref, img.Size, float64(img.Size)/(1<<20), buildTime.Round(time.Second))
	if img.Size > maxImageSize {
		t.Errorf("the image is %d bytes, over the %d-byte budget", img.Size, maxImageSize)
	}
}

// TestImageContents: the image is the binary, the action's two entrypoint
// links to it, the CA bundle and an empty /tmp; its entrypoint is the
// binary and it sets no user (the runner needs root for the file-command
// files; the broker's deployment sets its own).
func TestImageContents(t *testing.T) {
	e, img := needImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cfg, err := e.Output(ctx, "image", "inspect", "--format", "{{json .Config.Entrypoint}} user={{.Config.User}}", img.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if want := `["/usr/local/bin/astro-sts"] user=`; cfg != want {
		t.Errorf("image config %q, want %q", cfg, want)
	}

	version, err := e.Output(ctx, "run", "--rm", "--label", containerLabel, "--network", "none", img.Ref, "version")
	if err != nil {
		t.Fatal(err)
	}
	if version != "astro-sts imagetest" {
		t.Errorf("version = %q, want the VERSION build argument", version)
	}

	// The file system, read from an exported container (the image has no
	// shell to list it with).
	name := containerName("astro-sts-imagetest-export")
	if _, err := e.Output(ctx, "create", "--name", name, "--label", containerLabel, img.Ref); err != nil {
		t.Fatal(err)
	}
	defer removeContainer(t, e, name)
	cmd := e.Command(ctx, nil, "export", name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		switch name {
		// What the engine adds to every container, not the image.
		case ".dockerenv", "dev", "dev/console", "dev/pts", "dev/shm", "etc/hostname", "etc/hosts",
			"etc/mtab", "etc/resolv.conf", "proc", "sys":
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			got[name] = "dir " + h.FileInfo().Mode().String()
		case tar.TypeSymlink:
			got[name] = "-> " + h.Linkname
		case tar.TypeReg:
			got[name] = "file"
		default:
			got[name] = "type " + string(h.Typeflag)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"etc":                               got["etc"],
		"etc/ssl":                           got["etc/ssl"],
		"etc/ssl/certs":                     got["etc/ssl/certs"],
		"etc/ssl/certs/ca-certificates.crt": "file",
		"tmp":                               "dir dtrwxrwxrwx",
		"usr":                               got["usr"],
		"usr/local":                         got["usr/local"],
		"usr/local/bin":                     got["usr/local/bin"],
		"usr/local/bin/astro-sts":           "file",
		"usr/local/bin/astro-sts-action":    "-> astro-sts",
		"usr/local/bin/astro-sts-post":      "-> astro-sts",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		names := make([]string, 0, len(got))
		for n := range got {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Errorf("image files (-want +got):\n%s\nall: %q", diff, names)
	}
}
