// ociimage packs files into a one-layer container image on an empty base, without a
// container engine: the operator's image (a static binary, as the Dockerfile's final
// `scratch` stage has it) and the node's sandbox (pause) image. The layer is reproducible:
// fixed modes, owners and times, files in name order.
//
// Usage:
//
//	ociimage -o image.tar -tag armor-refresh:0.1.0 -entrypoint /armor-refresh -user 65532:65532 \
//	  -label org.opencontainers.image.source=... -file /armor-refresh=target/.../armor-refresh
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var files, labels, texts multi
	out := flag.String("o", "", "output: an image tarball that `ctr images import` and `docker load` read")
	tag := flag.String("tag", "", "the image's name and tag, e.g. armor-refresh:0.1.0")
	entrypoint := flag.String("entrypoint", "", "the binary the image runs")
	user := flag.String("user", "65532:65532", "uid:gid the image runs as")
	flag.Var(&files, "file", "IMAGE_PATH=LOCAL_PATH, an executable copied into the image (repeatable)")
	flag.Var(&texts, "text", "IMAGE_PATH=CONTENT, a small read-only file (repeatable)")
	flag.Var(&labels, "label", "KEY=VALUE, an OCI label (repeatable)")
	flag.Parse()
	if *out == "" || *tag == "" || *entrypoint == "" || len(files) == 0 {
		fmt.Fprintln(os.Stderr, "ociimage: -o, -tag, -entrypoint and at least one -file are required")
		os.Exit(2)
	}
	if err := run(*out, *tag, *entrypoint, *user, files, texts, labels); err != nil {
		fmt.Fprintf(os.Stderr, "ociimage: %v\n", err)
		os.Exit(1)
	}
}

type entry struct {
	path string
	mode int64
	data []byte
}

func run(out, tag, entrypoint, user string, files, texts, labels multi) error {
	ref, err := name.NewTag(tag, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", tag, err)
	}
	var entries []entry
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("-file %q: want IMAGE_PATH=LOCAL_PATH", f)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		entries = append(entries, entry{strings.TrimPrefix(dst, "/"), 0o755, data})
	}
	for _, t := range texts {
		dst, content, ok := strings.Cut(t, "=")
		if !ok {
			return fmt.Errorf("-text %q: want IMAGE_PATH=CONTENT", t)
		}
		entries = append(entries, entry{strings.TrimPrefix(dst, "/"), 0o644, []byte(content)})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].path < entries[j].path })
	layerTar, err := tarOf(entries)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	// The machine's own: the files packed were built here.
	cfg.Architecture, cfg.OS = runtime.GOARCH, "linux"
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config.Entrypoint = []string{entrypoint}
	cfg.Config.User = user
	cfg.Config.WorkingDir = "/"
	cfg.Config.Labels = map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-label %q: want KEY=VALUE", l)
		}
		cfg.Config.Labels[k] = v
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// tarOf writes the entries, and the directories above them, with fixed owners and times.
func tarOf(entries []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	for _, e := range entries {
		parts := strings.Split(e.path, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/") + "/"
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, err
			}
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.path, Mode: e.mode, Size: int64(len(e.data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
