// Package doclinks holds no code, only tests that keep the repository's
// documentation self-contained: every relative link of every Markdown file
// resolves to a file (and heading) inside the repository, and every
// "docs/PROTOCOL.md §N" citation in the Go sources names a section that
// exists. A clone therefore has no broken link, and no link leaves it.
package doclinks
