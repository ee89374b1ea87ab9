package doclinks

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the module root, two directories up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// walk calls f for every file of the repository whose name ends in ext,
// skipping .git and installed dependencies.
func walk(t *testing.T, root, ext string, f func(path string)) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ext) {
			f(path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// markdown is what the checks need of one Markdown file: its links and the
// anchors of its headings.
type markdown struct {
	links   []link
	anchors map[string]bool
}

type link struct {
	line   int
	target string
}

var (
	linkRe    = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	codeRe    = regexp.MustCompile("`[^`]*`")
	headingRe = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
)

func readMarkdown(t *testing.T, path string) markdown {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	md := markdown{anchors: map[string]bool{}}
	seen := map[string]int{}
	fenced := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		if m := headingRe.FindStringSubmatch(line); m != nil {
			a := slug(m[1])
			if k := seen[a]; k > 0 {
				md.anchors[a+"-"+itoa(k)] = true
			} else {
				md.anchors[a] = true
			}
			seen[a]++
		}
		for _, m := range linkRe.FindAllStringSubmatch(codeRe.ReplaceAllString(line, ""), -1) {
			md.links = append(md.links, link{line: n, target: m[1]})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return md
}

// slug is GitHub's anchor for a heading: lower case, punctuation other
// than '-' and '_' removed, spaces turned into '-'.
func slug(heading string) string {
	heading = codeRe.ReplaceAllStringFunc(heading, func(s string) string { return strings.Trim(s, "`") })
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

// TestMarkdownLinksStayInTheRepository checks every relative link of every
// Markdown file: the target exists, lies inside the repository, and, when
// it names a heading of a Markdown file, that heading exists.
func TestMarkdownLinksStayInTheRepository(t *testing.T) {
	root := repoRoot(t)
	files := map[string]markdown{}
	walk(t, root, ".md", func(path string) { files[path] = readMarkdown(t, path) })
	if len(files) < 5 {
		t.Fatalf("found only %d Markdown files under %s", len(files), root)
	}
	checked := 0
	for path, md := range files {
		rel, _ := filepath.Rel(root, path)
		for _, l := range md.links {
			target := l.target
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			file, anchor, _ := strings.Cut(target, "#")
			dest := path
			if file != "" {
				dest = filepath.Join(filepath.Dir(path), filepath.FromSlash(file))
				if r, err := filepath.Rel(root, dest); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
					t.Errorf("%s:%d: link %q leaves the repository", rel, l.line, target)
					continue
				}
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s:%d: link %q: %v", rel, l.line, target, err)
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			if !files[dest].anchors[anchor] {
				t.Errorf("%s:%d: link %q: no heading with anchor #%s", rel, l.line, target, anchor)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative link checked: the link pattern matches nothing")
	}
}

var citationRe = regexp.MustCompile(`PROTOCOL\.md\s*(?://\s*)?((?:§\d+(?:\.\d+)?(?:,\s*)?)+)`)

// TestProtocolCitationsExist checks that every "docs/PROTOCOL.md §N" in the
// Go sources and the Markdown files names a numbered section of
// docs/PROTOCOL.md ("## N." or "### N.M").
func TestProtocolCitationsExist(t *testing.T) {
	root := repoRoot(t)
	sections := map[string]bool{}
	f, err := os.ReadFile(filepath.Join(root, "docs", "PROTOCOL.md"))
	if err != nil {
		t.Fatal(err)
	}
	secRe := regexp.MustCompile(`(?m)^#{2,3} (\d+(?:\.\d+)?)\.? `)
	for _, m := range secRe.FindAllStringSubmatch(string(f), -1) {
		sections[m[1]] = true
	}
	if len(sections) < 10 {
		t.Fatalf("docs/PROTOCOL.md has only %d numbered sections", len(sections))
	}
	cited := 0
	check := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// Comments wrap: join each line with the next, minus comment markers.
		text := regexp.MustCompile(`\n\s*(//)?\s*`).ReplaceAllString(string(b), " ")
		rel, _ := filepath.Rel(root, path)
		for _, m := range citationRe.FindAllStringSubmatch(text, -1) {
			for _, s := range regexp.MustCompile(`§(\d+(?:\.\d+)?)`).FindAllStringSubmatch(m[1], -1) {
				cited++
				if !sections[s[1]] {
					t.Errorf("%s cites docs/PROTOCOL.md §%s, which does not exist", rel, s[1])
				}
			}
		}
	}
	walk(t, root, ".go", check)
	walk(t, root, ".md", check)
	if cited < 15 {
		t.Fatalf("found only %d citations of docs/PROTOCOL.md sections; the pattern is broken", cited)
	}
}

// TestNoNotesOutsideTheRepository checks that no source or document points
// at the team's notes next to the repository, which a clone does not have.
func TestNoNotesOutsideTheRepository(t *testing.T) {
	root := repoRoot(t)
	const outside = "shared/" + "directus"
	for _, ext := range []string{".go", ".md", ".sh"} {
		walk(t, root, ext, func(path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), outside) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s refers to %s, which is outside the repository", rel, outside)
			}
		})
	}
}
