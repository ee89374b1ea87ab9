// Command skipcheck reads the output of `go test -json`, prints it as go
// test would (the output of failed tests, every package's result line and
// build errors), lists every skipped test with the reason it gave, and fails
// when a test failed or a test skipped that the allow-list does not name.
// scripts/test.sh runs it on each of its test runs, so that no test can skip
// unnoticed in CI.
//
//	go test -json ./... | go run ./internal/skipcheck -allow scripts/skips.txt -
//	go run ./internal/skipcheck -allow scripts/skips.txt run.json
//
// "-" reads standard input as it comes, so that a long run shows each
// package's result when it ends.
//
// The allow-list has one entry a line: the package (its import path, or the
// path relative to the module), a regular expression that must match the
// whole test name (with its subtests, as in TestA/sub), and after a '#' the
// reason, which is required. Blank lines and lines starting with '#' are
// comments.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

func main() {
	allowFile := flag.String("allow", "", "allow-list file (see the package documentation)")
	flag.Parse()
	var allow []rule
	if *allowFile != "" {
		f, err := os.Open(*allowFile)
		if err != nil {
			fatal(err)
		}
		allow, err = parseRules(f)
		f.Close()
		if err != nil {
			fatal(fmt.Errorf("%s: %w", *allowFile, err))
		}
	}
	if flag.NArg() == 0 {
		fatal(errors.New("usage: skipcheck [-allow file] run.json... (- for standard input)"))
	}
	var res result
	for _, name := range flag.Args() {
		f := os.Stdin
		if name != "-" {
			var err error
			if f, err = os.Open(name); err != nil {
				fatal(err)
			}
		}
		err := res.read(f, os.Stdout)
		f.Close()
		if err != nil {
			fatal(fmt.Errorf("%s: %w", name, err))
		}
	}
	if !res.report(os.Stdout, allow) {
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "skipcheck:", err)
	os.Exit(2)
}

// rule is one entry of the allow-list.
type rule struct {
	pkg    string
	test   *regexp.Regexp
	reason string
}

func (r rule) matches(pkg, test string) bool {
	return (pkg == r.pkg || strings.HasSuffix(pkg, "/"+r.pkg)) && r.test.MatchString(test)
}

func parseRules(r io.Reader) ([]rule, error) {
	var out []rule
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		spec, reason, _ := strings.Cut(line, "#")
		reason = strings.TrimSpace(reason)
		fields := strings.Fields(spec)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"package test-regexp # reason\", got %q", n, line)
		}
		if reason == "" {
			return nil, fmt.Errorf("line %d: %s %s has no reason", n, fields[0], fields[1])
		}
		re, err := regexp.Compile("^(?:" + fields[1] + ")$")
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, rule{pkg: fields[0], test: re, reason: reason})
	}
	return out, sc.Err()
}

// event is one line of `go test -json` (cmd/test2json), including the
// build events of Go 1.24 and later.
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string
}

type key struct{ pkg, test string }

// skip is one skipped test and the reason it printed.
type skip struct {
	key
	reason string
}

type result struct {
	output     map[key][]string
	skips      []skip
	failed     []key
	failedPkgs []string
	results    int // package result events seen
}

// flushPackage prints what the package's unfinished tests printed.
func (r *result) flushPackage(pkg string, out io.Writer) {
	var pending []key
	for k := range r.output {
		if k.pkg == pkg {
			pending = append(pending, k)
		}
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i].test < pending[j].test })
	for _, k := range pending {
		fmt.Fprintf(out, "skipcheck: %s %s did not finish; its output:\n", k.pkg, k.test)
		for _, line := range r.output[k] {
			fmt.Fprint(out, line)
		}
		delete(r.output, k)
	}
}

// read consumes one JSON stream, printing what go test would print of it.
func (r *result) read(in io.Reader, out io.Writer) error {
	if r.output == nil {
		r.output = map[key][]string{}
	}
	dec := json.NewDecoder(in)
	for {
		var e event
		if err := dec.Decode(&e); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
		case "output":
			if e.Test == "" {
				fmt.Fprint(out, e.Output) // "ok pkg 1.2s", "FAIL", panics outside tests
				continue
			}
			r.output[k] = append(r.output[k], e.Output)
		case "fail":
			if e.Test == "" {
				// A package can fail without any test failing: a panic, or
				// the -timeout of a test that never returned. What its
				// unfinished tests printed (the panic and its stacks
				// among it) is all there is to see.
				r.results++
				r.failedPkgs = append(r.failedPkgs, e.Package)
				r.flushPackage(e.Package, out)
				continue
			}
			r.failed = append(r.failed, k)
			for _, line := range r.output[k] {
				fmt.Fprint(out, line)
			}
			delete(r.output, k)
		case "skip":
			if e.Test == "" {
				r.results++ // a package without tests
				continue
			}
			r.skips = append(r.skips, skip{key: k, reason: skipReason(r.output[k])})
			delete(r.output, k)
		case "pass":
			if e.Test == "" {
				r.results++
			}
			delete(r.output, k)
		}
	}
}

// skipReason is what the test logged (its t.Skip message among it): its
// output without the framing lines of go test.
func skipReason(lines []string) string {
	var reason []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case l == "", strings.HasPrefix(l, "=== "), strings.HasPrefix(l, "--- SKIP:"):
			continue
		}
		reason = append(reason, l)
	}
	return strings.Join(reason, " ")
}

// report lists the skips and says whether the run is acceptable: no test
// failed, every skip is allowed, and the input held at least one package.
func (r *result) report(out io.Writer, allow []rule) bool {
	ok := true
	if r.results == 0 {
		fmt.Fprintln(out, "skipcheck: no package result in the input: did go test run?")
		ok = false
	}
	sort.Slice(r.skips, func(i, j int) bool {
		if r.skips[i].pkg != r.skips[j].pkg {
			return r.skips[i].pkg < r.skips[j].pkg
		}
		return r.skips[i].test < r.skips[j].test
	})
	var unexpected []skip
	for _, s := range r.skips {
		allowed := ""
		for _, a := range allow {
			if a.matches(s.pkg, s.test) {
				allowed = a.reason
				break
			}
		}
		if allowed == "" {
			unexpected = append(unexpected, s)
			continue
		}
		fmt.Fprintf(out, "skipcheck: allowed skip %s %s (%s)\n", s.pkg, s.test, allowed)
	}
	for _, s := range unexpected {
		fmt.Fprintf(out, "skipcheck: UNEXPECTED SKIP %s %s: %s\n", s.pkg, s.test, s.reason)
	}
	if len(unexpected) > 0 {
		fmt.Fprintf(out, "skipcheck: %d tests skipped that scripts/skips.txt does not allow: make them run, make them fail, or add them with a reason\n", len(unexpected))
		ok = false
	}
	if len(r.failed) > 0 {
		fmt.Fprintf(out, "skipcheck: %d tests failed\n", len(r.failed))
		ok = false
	}
	if len(r.failedPkgs) > 0 {
		fmt.Fprintf(out, "skipcheck: %d packages failed: %s\n", len(r.failedPkgs), strings.Join(r.failedPkgs, " "))
		ok = false
	}
	return ok
}
