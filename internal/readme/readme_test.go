package readme

import (
	"encoding/json"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goBlock returns the first fenced ```go block of a Markdown text.
func goBlock(t *testing.T, md string) string {
	t.Helper()
	const open = "\n```go\n"
	i := strings.Index(md, open)
	if i < 0 {
		t.Fatal("README.md has no ```go block")
	}
	rest := md[i+len(open):]
	j := strings.Index(rest, "\n```\n")
	if j < 0 {
		t.Fatal("README.md's ```go block is not closed")
	}
	return rest[:j+1]
}

// TestREADMEProgramBuilds builds the README's program inside this module
// (through a -overlay, so nothing is written into the repository): every
// import must exist, every variable must be used, and the APIs it calls
// must have the signatures it assumes. The block must also be gofmt'ed.
func TestREADMEProgramBuilds(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	src := goBlock(t, string(md))
	if !strings.HasPrefix(src, "package main\n") {
		t.Fatalf("the README's Go block must be a whole program starting with \"package main\", got:\n%s", src)
	}
	if strings.Contains(src, "...") {
		t.Fatal("the README's Go block has an ellipsis: it must compile as written")
	}

	if formatted, err := format.Source([]byte(src)); err != nil {
		t.Fatalf("the README's Go block does not parse: %v", err)
	} else if string(formatted) != src {
		t.Errorf("the README's Go block is not gofmt'ed; gofmt gives:\n%s", formatted)
	}

	tmp := t.TempDir()
	file := filepath.Join(tmp, "main.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// The program appears at internal/readme/program/main.go, a directory
	// that exists only in the overlay.
	virtual := filepath.Join(root, "internal", "readme", "program", "main.go")
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {virtual: file}})
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(tmp, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-overlay", overlayFile, "-o", filepath.Join(tmp, "program"), "./internal/readme/program")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s\nthe README's program:\n%s", err, out, src)
	}
}
