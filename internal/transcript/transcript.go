// Package transcript parses the protocol transcripts recorded against a real
// Directus 12.4.1 (transcript.txt on SQLite, transcript-postgres.txt on
// PostgreSQL), so that tests can compare frames with what the real server
// sent and fuzzers can start from real frames. The files are kept verbatim
// in this directory and embedded, so every clone has them; docs/PROTOCOL.md
// explains what they show, step by step. Only tests import this package.
package transcript

import (
	"bufio"
	_ "embed"
	"regexp"
	"strconv"
	"strings"
)

//go:embed transcript.txt
var sqlite string

//go:embed transcript-postgres.txt
var postgres string

// Direction of a line.
type Direction int

const (
	ClientToServer Direction = iota + 1 // ">>>" on a WebSocket connection
	ServerToClient                      // "<<<" on a WebSocket connection
	ConnEvent                           // "..." connect, open, closed, rejected
	RESTRequest                         // "REST >>>"
	RESTResponse                        // "REST <<<"
	Note                                // "---"
)

// Line is one timed line of a step.
type Line struct {
	Time float64 // seconds since the scenario started
	Conn string  // connection label (A, H3, Rd, …); "REST" for HTTP calls; "" for notes
	Dir  Direction
	Text string // the frame verbatim, or the event/note text
}

// Step is one "###" section.
type Step struct {
	Scenario string // handshake, expiry, strict, public, shutdown
	Label    string // H1, S2, R8, …
	Title    string
	Lines    []Line
}

// Frames returns the texts of the step's lines in direction d, optionally
// only those of connection conn ("" = any).
func (s Step) Frames(d Direction, conn string) []string {
	var out []string
	for _, l := range s.Lines {
		if l.Dir == d && (conn == "" || l.Conn == conn) {
			out = append(out, l.Text)
		}
	}
	return out
}

var (
	scenarioRe = regexp.MustCompile(`^## scenario: (\S+)`)
	stepRe     = regexp.MustCompile(`^### (\S+) ?(.*)$`)
	lineRe     = regexp.MustCompile(`^\s*([0-9]+\.[0-9]+) (\S+)\s+(>>>|<<<|\.\.\.) ?(.*)$`)
	noteRe     = regexp.MustCompile(`^\s*([0-9]+\.[0-9]+) --- (.*)$`)
)

// SQLiteText returns transcript.txt as recorded, for parsers of their own.
func SQLiteText() string { return sqlite }

// SQLite returns the steps of transcript.txt in file order.
func SQLite() []Step { return parse(sqlite) }

// Postgres returns the steps of transcript-postgres.txt in file order.
func Postgres() []Step { return parse(postgres) }

// Find returns the step with the given label from steps.
func Find(steps []Step, label string) (Step, bool) {
	for _, s := range steps {
		if s.Label == label {
			return s, true
		}
	}
	return Step{}, false
}

// ServerFrames returns every frame the server sent in steps, in file order.
func ServerFrames(steps []Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Frames(ServerToClient, "")...)
	}
	return out
}

// ClientFrames returns every WebSocket frame clients sent in steps.
func ClientFrames(steps []Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.Frames(ClientToServer, "")...)
	}
	return out
}

func parse(text string) []Step {
	var steps []Step
	var scenario string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := scenarioRe.FindStringSubmatch(line); m != nil {
			scenario = m[1]
			continue
		}
		if m := stepRe.FindStringSubmatch(line); m != nil {
			steps = append(steps, Step{Scenario: scenario, Label: m[1], Title: m[2]})
			continue
		}
		if len(steps) == 0 {
			continue
		}
		cur := &steps[len(steps)-1]
		if m := noteRe.FindStringSubmatch(line); m != nil {
			t, _ := strconv.ParseFloat(m[1], 64)
			cur.Lines = append(cur.Lines, Line{Time: t, Dir: Note, Text: m[2]})
			continue
		}
		m := lineRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		t, _ := strconv.ParseFloat(m[1], 64)
		l := Line{Time: t, Conn: m[2], Text: m[4]}
		switch {
		case m[2] == "REST" && m[3] == ">>>":
			l.Dir = RESTRequest
		case m[2] == "REST" && m[3] == "<<<":
			l.Dir = RESTResponse
		case m[3] == ">>>":
			l.Dir = ClientToServer
		case m[3] == "<<<":
			l.Dir = ServerToClient
		default:
			l.Dir = ConnEvent
		}
		cur.Lines = append(cur.Lines, l)
	}
	return steps
}
