package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stream builds `go test -json` lines.
func stream(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

const (
	pkg    = "github.com/e41af43e/directus-realtime/conformance"
	skipA  = `{"Action":"run","Package":"` + pkg + `","Test":"TestQuietWrites/directus"}`
	skipA1 = `{"Action":"output","Package":"` + pkg + `","Test":"TestQuietWrites/directus","Output":"=== RUN   TestQuietWrites/directus\n"}`
	skipA2 = `{"Action":"output","Package":"` + pkg + `","Test":"TestQuietWrites/directus","Output":"    events_test.go:323: a real Directus emits events\n"}`
	skipA4 = `{"Action":"output","Package":"` + pkg + `","Test":"TestQuietWrites/directus","Output":"--- SKIP: TestQuietWrites/directus (0.00s)\n"}`
	skipA3 = `{"Action":"skip","Package":"` + pkg + `","Test":"TestQuietWrites/directus","Elapsed":0}`
	passB  = `{"Action":"pass","Package":"` + pkg + `","Test":"TestEvents","Elapsed":1}`
	pkgOut = `{"Action":"output","Package":"` + pkg + `","Output":"ok  \t` + pkg + `\t1.0s\n"}`
	pkgOK  = `{"Action":"pass","Package":"` + pkg + `","Elapsed":1}`
)

func run(t *testing.T, allowList, input string) (bool, string) {
	t.Helper()
	allow, err := parseRules(strings.NewReader(allowList))
	if err != nil {
		t.Fatal(err)
	}
	var r result
	var out strings.Builder
	if err := r.read(strings.NewReader(input), &out); err != nil {
		t.Fatal(err)
	}
	ok := r.report(&out, allow)
	return ok, out.String()
}

func TestAllowedSkipPasses(t *testing.T) {
	ok, out := run(t, "conformance TestQuietWrites/directus # no quiet writes on a real Directus\n",
		stream(skipA, skipA1, skipA2, skipA4, skipA3, passB, pkgOut, pkgOK))
	if !ok {
		t.Fatalf("an allowed skip failed the run:\n%s", out)
	}
	if !strings.Contains(out, "allowed skip") || !strings.Contains(out, "ok  \t"+pkg) {
		t.Errorf("output lacks the allowed skip or the package line:\n%s", out)
	}
}

func TestUnexpectedSkipFails(t *testing.T) {
	ok, out := run(t, "conformance TestOther # another one\n", stream(skipA, skipA1, skipA2, skipA4, skipA3, pkgOut, pkgOK))
	if ok {
		t.Fatalf("an unexpected skip passed:\n%s", out)
	}
	if !strings.Contains(out, "UNEXPECTED SKIP "+pkg+" TestQuietWrites/directus: events_test.go:323: a real Directus emits events") {
		t.Errorf("the report does not name the skip and its reason:\n%s", out)
	}
}

func TestPatternMatchesTheWholeName(t *testing.T) {
	// "TestQuietWrites" alone must not allow its subtest.
	ok, out := run(t, "conformance TestQuietWrites # the parent only\n", stream(skipA, skipA1, skipA2, skipA4, skipA3, pkgOK))
	if ok {
		t.Fatalf("a pattern matched a longer name:\n%s", out)
	}
}

func TestFailedTestFailsAndShowsItsOutput(t *testing.T) {
	ok, out := run(t, "", stream(
		`{"Action":"output","Package":"p","Test":"TestX","Output":"    x_test.go:9: boom\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestX","Elapsed":0}`,
		`{"Action":"fail","Package":"p","Elapsed":0}`))
	if ok || !strings.Contains(out, "x_test.go:9: boom") {
		t.Fatalf("ok=%v, output:\n%s", ok, out)
	}
}

func TestEmptyInputFails(t *testing.T) {
	if ok, out := run(t, "", ""); ok {
		t.Fatalf("an empty run passed:\n%s", out)
	}
}

func TestRuleWithoutReasonIsRefused(t *testing.T) {
	if _, err := parseRules(strings.NewReader("conformance TestX\n")); err == nil {
		t.Fatal("a rule without a reason was accepted")
	}
	if _, err := parseRules(strings.NewReader("conformance TestX extra # why\n")); err == nil {
		t.Fatal("a rule with three fields was accepted")
	}
}

// TestRepositoryAllowList parses the allow-list scripts/test.sh uses.
func TestRepositoryAllowList(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "scripts", "skips.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rules, err := parseRules(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		t.Fatal("scripts/skips.txt allows nothing; then it should say so in a comment, and this test should change")
	}
}

// A test that never returns: the binary panics at -timeout, no test event
// says fail, only the package does; the hung test's output must be shown.
func TestPackageFailureWithoutFailedTestFails(t *testing.T) {
	ok, out := run(t, "", stream(
		`{"Action":"run","Package":"p","Test":"TestHang"}`,
		`{"Action":"output","Package":"p","Test":"TestHang","Output":"=== RUN   TestHang\n"}`,
		`{"Action":"output","Package":"p","Test":"TestHang","Output":"panic: test timed out after 10m0s\n"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t600.1s\n"}`,
		`{"Action":"fail","Package":"p","Elapsed":600.1}`))
	if ok {
		t.Fatalf("a failed package passed:\n%s", out)
	}
	if !strings.Contains(out, "panic: test timed out") || !strings.Contains(out, "TestHang did not finish") {
		t.Fatalf("the hung test's output is not shown:\n%s", out)
	}
}
