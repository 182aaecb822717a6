package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// standInLabel marks a stand-in builder image; its value is the
// fingerprint of what it was made from, so a new toolchain makes a new one.
const standInLabel = "io.astro-sts.dockertest.stand-in"

// goEnvPassed are the module settings of this machine's go tool that the
// stand-in carries, so that `go mod download` in the build reaches the
// same proxy the tests' own go tool does.
var goEnvPassed = []string{"GOPROXY", "GOSUMDB", "GONOSUMDB", "GONOPROXY", "GOPRIVATE", "GOINSECURE"}

// toolchain is what a stand-in is made from.
type toolchain struct {
	goRoot, goVersion string
	goEnv             map[string]string
	busybox           string
	applets           []string
	caBundle          string
}

// StandIn makes ref (a golang:TAG image) from this machine's Go toolchain
// (GOROOT at /usr/local/go, as in the official image, with its GOPATH,
// PATH and GOTOOLCHAIN=local), a static busybox for /bin/sh and the shell
// tools RUN lines use, and this machine's CA bundle at
// /etc/ssl/certs/ca-certificates.crt. It is imported as one layer
// (`docker import`) and labelled with a fingerprint of its sources; if an
// image with that label value (have) already exists, nothing is done.
func (e *Engine) StandIn(ctx context.Context, ref, have string, log io.Writer) error {
	tc, err := findToolchain(ctx)
	if err != nil {
		return err
	}
	fp, err := tc.fingerprint()
	if err != nil {
		return err
	}
	if have == fp {
		fmt.Fprintf(log, "dockertest: reusing the stand-in %s (%s)\n", ref, tc.goVersion)
		return nil
	}
	fmt.Fprintf(log, "dockertest: making a stand-in %s from %s at %s and %s\n", ref, tc.goVersion, tc.goRoot, tc.busybox)

	changes := []string{
		"ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"ENV GOLANG_VERSION=" + strings.TrimPrefix(tc.goVersion, "go"),
		"ENV GOPATH=/go",
		"ENV GOTOOLCHAIN=local",
		"WORKDIR /go",
		"LABEL " + standInLabel + "=" + fp,
	}
	for _, k := range goEnvPassed {
		if v := tc.goEnv[k]; v != "" {
			changes = append(changes, "ENV "+k+"="+v)
		}
	}
	args := []string{"import"}
	for _, c := range changes {
		args = append(args, "--change", c)
	}
	args = append(args, "-", ref)

	pr, pw := io.Pipe()
	cmd := e.Command(ctx, nil, args...)
	cmd.Stdin = pr
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dockertest: docker import: %w", err)
	}
	werr := make(chan error, 1)
	go func() {
		err := tc.writeTar(pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	err = cmd.Wait()
	pr.CloseWithError(errors.New("docker import exited")) // unblocks the writer if docker stopped reading
	if terr := <-werr; terr != nil && err == nil {
		err = terr
	}
	if err != nil {
		return fmt.Errorf("dockertest: stand-in %s: %w: %s", ref, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// findToolchain locates the go tool, its GOROOT and settings, a static
// busybox and the CA bundle.
func findToolchain(ctx context.Context) (*toolchain, error) {
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gotool); err != nil {
		if gotool, err = exec.LookPath("go"); err != nil {
			return nil, errors.New("dockertest: no go tool for the stand-in builder")
		}
	}
	out, err := exec.CommandContext(ctx, gotool, append([]string{"env", "-json", "GOROOT", "GOVERSION"}, goEnvPassed...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("dockertest: go env: %w", err)
	}
	env := map[string]string{}
	if err := json.Unmarshal(out, &env); err != nil {
		return nil, fmt.Errorf("dockertest: go env: %w", err)
	}
	tc := &toolchain{goRoot: env["GOROOT"], goVersion: env["GOVERSION"], goEnv: env}

	tc.busybox, err = exec.LookPath("busybox")
	if err != nil {
		return nil, errors.New("dockertest: no busybox for the stand-in builder's shell: install busybox-static")
	}
	if tc.busybox, err = filepath.EvalSymlinks(tc.busybox); err != nil {
		return nil, err
	}
	if err := checkStatic(tc.busybox); err != nil {
		return nil, err
	}
	list, err := exec.CommandContext(ctx, tc.busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("dockertest: busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			tc.applets = append(tc.applets, a)
		}
	}

	tc.caBundle = os.Getenv("SSL_CERT_FILE")
	if tc.caBundle == "" {
		tc.caBundle = "/etc/ssl/certs/ca-certificates.crt"
	}
	if _, err := os.Stat(tc.caBundle); err != nil {
		return nil, fmt.Errorf("dockertest: no CA bundle for the stand-in builder: %w", err)
	}
	return tc, nil
}

// checkStatic refuses a dynamically linked busybox: the stand-in has no
// libc for it (Debian's busybox package is dynamic, busybox-static is not).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("dockertest: %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dockertest: %s is dynamically linked: install busybox-static", path)
		}
	}
	return nil
}

// fingerprint identifies the stand-in's sources: the Go version and
// GOROOT, the module settings, and the busybox and CA bundle contents.
func (tc *toolchain) fingerprint() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "v2\x00%s\x00%s\x00", tc.goVersion, tc.goRoot)
	for _, k := range goEnvPassed {
		fmt.Fprintf(h, "%s=%s\x00", k, tc.goEnv[k])
	}
	for _, p := range []string{tc.busybox, tc.caBundle} {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// writeTar writes the stand-in's file system.
func (tc *toolchain) writeTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
	}
	for _, d := range []struct {
		name string
		mode int64
	}{
		{"bin", 0o755}, {"etc", 0o755}, {"etc/ssl", 0o755}, {"etc/ssl/certs", 0o755},
		{"tmp", 0o1777}, {"root", 0o700}, {"go", 0o777}, {"go/bin", 0o777}, {"go/src", 0o777},
		{"usr", 0o755}, {"usr/local", 0o755},
	} {
		if err := dir(d.name, d.mode); err != nil {
			return err
		}
	}
	// root's account, as in the official image: without it the engine
	// sets HOME=/ for RUN lines, and Go's build cache would miss the
	// Dockerfile's cache mount at /root/.cache/go-build.
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":  "root:x:0:\n",
	} {
		if err := addBytes(tw, name, []byte(content)); err != nil {
			return err
		}
	}
	if err := addFile(tw, tc.busybox, "bin/busybox"); err != nil {
		return err
	}
	for _, a := range tc.applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}); err != nil {
			return err
		}
	}
	if err := addFile(tw, tc.caBundle, "etc/ssl/certs/ca-certificates.crt"); err != nil {
		return err
	}
	err := filepath.WalkDir(tc.goRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(tc.goRoot, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join("usr/local/go", rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return dir(name, int64(info.Mode().Perm()))
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777})
		case info.Mode().IsRegular():
			return addFile(tw, path, name)
		}
		return nil // sockets and the like: not part of a toolchain
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// addBytes adds a regular file with content.
func addBytes(tw *tar.Writer, name string, content []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
		return err
	}
	_, err := tw.Write(content)
	return err
}

// addFile copies a regular file (following links) into the archive.
func addFile(tw *tar.Writer, src, name string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     int64(info.Mode().Perm()),
		Size:     info.Size(),
		ModTime:  info.ModTime(),
	}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
