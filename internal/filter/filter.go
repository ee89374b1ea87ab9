// Package filter evaluates a Directus filter on one row's own fields, on the
// client, without asking the server.
//
// It exists so that a store replica can tell, from an update event that
// carries only the fields a filter reads, that a row it holds left its
// filter: Directus sends nothing for that (docs/PROTOCOL.md §5.2). The
// package is internal because its answer is deliberately partial: it
// answers No only where the server's SQL would surely not match, and
// Unknown wherever the answer depends on the database (collation, case
// folding of LIKE, LIKE wildcards, number-string affinity, date formats) or
// on things a row does not carry. That is the right contract for removing
// a row early, where Unknown means "leave it to reconcile", but not one to
// promise users as a general filter engine.
//
// It shares no code with directustest's filter evaluation on purpose: the
// conformance tests check each against the other and against a real
// Directus.
package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
)

// Result is the answer of Match: three-valued, as SQL's.
type Result int8

const (
	// Unknown: the row may or may not match; only the server can tell.
	Unknown Result = iota
	// No: the server's filter surely does not select the row.
	No
	// Yes: the server's filter surely selects the row.
	Yes
)

func (r Result) String() string {
	switch r {
	case No:
		return "no"
	case Yes:
		return "yes"
	}
	return "unknown"
}

func (r Result) not() Result {
	switch r {
	case No:
		return Yes
	case Yes:
		return No
	}
	return Unknown
}

func and(a, b Result) Result {
	switch {
	case a == No || b == No:
		return No
	case a == Yes && b == Yes:
		return Yes
	}
	return Unknown
}

func or(a, b Result) Result {
	switch {
	case a == Yes || b == Yes:
		return Yes
	case a == No && b == No:
		return No
	}
	return Unknown
}

func of(b bool) Result {
	if b {
		return Yes
	}
	return No
}

// ErrNotLocal matches a *NotLocalError.
var ErrNotLocal = errors.New("directus: the filter cannot be evaluated locally")

// NotLocalError says why a filter cannot be evaluated on a row's own fields:
// a relational path, a dynamic variable ($NOW, $CURRENT_USER …), an
// operator this package does not evaluate (_some, _none, _regex, geometry
// …), or a shape that is not a filter at all (which the server refuses).
type NotLocalError struct {
	Reason string
}

func (e *NotLocalError) Error() string { return ErrNotLocal.Error() + ": " + e.Reason }

// Is makes errors.Is(err, ErrNotLocal) true.
func (e *NotLocalError) Is(target error) bool { return target == ErrNotLocal }

func notLocal(reason string) error { return &NotLocalError{Reason: reason} }

// Filter is a parsed filter. It is immutable and safe for concurrent use.
type Filter struct {
	root   *node
	fields []string
}

// Parse parses a filter given as Go values, as protocol.Query.Filter holds
// it (map[string]any with any JSON-encodable values). A *NotLocalError (a
// match of ErrNotLocal) says it cannot be evaluated locally.
func Parse(f map[string]any) (*Filter, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, notLocal("not JSON: " + err.Error())
	}
	return ParseJSON(b)
}

// ParseJSON parses a filter from its JSON text. Numbers keep their text,
// so that a large integer compares exactly.
func ParseJSON(b []byte) (*Filter, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, notLocal("not JSON: " + err.Error())
	}
	if dec.More() {
		return nil, notLocal("trailing data after the filter")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, notLocal("a filter is an object")
	}
	p := &parser{seen: map[string]bool{}}
	root, err := p.group(obj, 0)
	if err != nil {
		return nil, err
	}
	slices.Sort(p.fields)
	return &Filter{root: root, fields: p.fields}, nil
}

// Fields returns the fields the filter reads, sorted: what a row needs to
// be evaluated. The caller must not modify the slice.
func (f *Filter) Fields() []string { return f.fields }

// Match evaluates the filter on a row decoded from JSON (values nil, bool,
// string, json.Number or float64, []any, map[string]any). A field the row
// lacks makes its conditions Unknown.
func (f *Filter) Match(row map[string]any) Result { return f.root.match(row) }

// MatchJSON evaluates the filter on a row's JSON text; a row that does not
// decode to an object is Unknown.
func (f *Filter) MatchJSON(raw []byte) Result {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var row map[string]any
	if dec.Decode(&row) != nil || row == nil {
		return Unknown
	}
	return f.Match(row)
}

// maxDepth bounds the nesting of _and/_or, so that a hostile filter cannot
// exhaust the stack.
const maxDepth = 64

type parser struct {
	fields []string
	seen   map[string]bool
}

// node is _and (logic 'a'), _or ('o'), or a condition on one field.
type node struct {
	logic    byte
	children []*node
	cond     *cond
}

func (n *node) match(row map[string]any) Result {
	switch n.logic {
	case 'a':
		r := Yes
		for _, c := range n.children {
			if r = and(r, c.match(row)); r == No {
				return No
			}
		}
		return r
	case 'o':
		r := No
		for _, c := range n.children {
			if r = or(r, c.match(row)); r == Yes {
				return Yes
			}
		}
		return r
	}
	v, ok := row[n.cond.field]
	if !ok {
		return Unknown
	}
	return n.cond.eval(valueOf(v))
}

// group parses an object of conditions, all of which must hold.
func (p *parser) group(obj map[string]any, depth int) (*node, error) {
	if depth > maxDepth {
		return nil, notLocal("nested too deep")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	all := &node{logic: 'a'}
	for _, k := range keys {
		v := obj[k]
		switch {
		case k == "_and" || k == "_or":
			list, ok := v.([]any)
			if !ok {
				return nil, notLocal(k + " takes an array of filters")
			}
			n := &node{logic: k[1]}
			for _, e := range list {
				sub, ok := e.(map[string]any)
				if !ok {
					return nil, notLocal(k + " takes an array of filters")
				}
				c, err := p.group(sub, depth+1)
				if err != nil {
					return nil, err
				}
				n.children = append(n.children, c)
			}
			all.children = append(all.children, n)
		case strings.HasPrefix(k, "_"):
			return nil, notLocal("operator " + k + " in place of a field")
		default:
			conds, err := p.field(k, v)
			if err != nil {
				return nil, err
			}
			all.children = append(all.children, conds...)
		}
	}
	return all, nil
}

// field parses the conditions on one field.
func (p *parser) field(name string, v any) ([]*node, error) {
	if strings.ContainsAny(name, ".()$") {
		// A path (author.name), a function (year(date)) or a variable.
		return nil, notLocal("field " + name + " is not a plain field")
	}
	ops, ok := v.(map[string]any)
	if !ok {
		// {"status": "published"}: Directus reads a bare value as _eq.
		ops = map[string]any{"_eq": v}
	}
	if len(ops) == 0 {
		return nil, notLocal("field " + name + " has no operator")
	}
	names := make([]string, 0, len(ops))
	for op := range ops {
		names = append(names, op)
	}
	slices.Sort(names)
	out := make([]*node, 0, len(names))
	for _, op := range names {
		if !strings.HasPrefix(op, "_") {
			return nil, notLocal("field " + name + " is filtered through a relation (" + op + ")")
		}
		c, err := parseCond(name, op, ops[op])
		if err != nil {
			return nil, err
		}
		out = append(out, &node{cond: c})
	}
	if !p.seen[name] {
		p.seen[name] = true
		p.fields = append(p.fields, name)
	}
	return out, nil
}

// MatchFields evaluates the filter on a row whose fields are still raw
// JSON, as an event's rows decode into map[string]json.RawMessage: only the
// fields the filter reads are decoded. A field that does not decode counts
// as absent.
func (f *Filter) MatchFields(row map[string]json.RawMessage) Result {
	vals := make(map[string]any, len(f.fields))
	for _, name := range f.fields {
		raw, ok := row[name]
		if !ok {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			continue
		}
		vals[name] = v
	}
	return f.Match(vals)
}
