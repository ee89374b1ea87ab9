package directustest

import "strings"

// The GraphQL subscription document the /graphql endpoint serves
// (docs/PROTOCOL.md §13.3): one field <collection>_mutated, an optional
// event argument, a selection of key, event and data { fields }. This is
// a parser of that shape and nothing more; other documents get the error
// Directus's validation would give for the part that is not served.

type gqlSelection struct {
	collection string
	event      string   // "" for all
	outer      []string // key, event, data in the order selected
	fields     []string // the data selection
}

type gqlLexer struct {
	src string
	pos int
}

func (l *gqlLexer) next() string {
	for l.pos < len(l.src) {
		ch := l.src[l.pos]
		if ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == ',' {
			l.pos++
			continue
		}
		if ch == '#' {
			for l.pos < len(l.src) && l.src[l.pos] != '\n' {
				l.pos++
			}
			continue
		}
		break
	}
	if l.pos >= len(l.src) {
		return ""
	}
	start := l.pos
	ch := l.src[l.pos]
	if isGQLNameByte(ch, true) {
		for l.pos < len(l.src) && isGQLNameByte(l.src[l.pos], false) {
			l.pos++
		}
		return l.src[start:l.pos]
	}
	l.pos++
	return l.src[start:l.pos]
}

func isGQLNameByte(b byte, first bool) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || !first && b >= '0' && b <= '9'
}

// parseGQLSubscription parses doc; the error message is the GraphQL one.
func parseGQLSubscription(doc string) (*gqlSelection, string) {
	const parseFail = "Failed to parse GraphQL document."
	l := &gqlLexer{src: doc}
	tok := l.next()
	if tok != "subscription" {
		if tok == "query" || tok == "mutation" || tok == "{" {
			return nil, "directustest serves only subscription operations on /graphql"
		}
		return nil, parseFail
	}
	tok = l.next()
	if tok != "{" {
		if isGQLNameByte(firstByte(tok), true) { // operation name
			tok = l.next()
		}
		if tok != "{" {
			return nil, parseFail
		}
	}
	field := l.next()
	if !strings.HasSuffix(field, "_mutated") || len(field) == len("_mutated") {
		return nil, `Cannot query field "` + field + `" on type "Subscription".`
	}
	sel := &gqlSelection{collection: strings.TrimSuffix(field, "_mutated")}
	tok = l.next()
	if tok == "(" {
		for {
			arg := l.next()
			if arg == ")" {
				break
			}
			if l.next() != ":" {
				return nil, parseFail
			}
			val := l.next()
			if arg != "event" {
				return nil, `Unknown argument "` + arg + `" on field "Subscription.` + field + `".`
			}
			switch val {
			case "create", "update", "delete":
				sel.event = val
			default:
				return nil, `Value "` + val + `" does not exist in "EventEnum" enum.`
			}
		}
		tok = l.next()
	}
	if tok != "{" {
		return nil, `Field "` + field + `" of type "` + field + `" must have a selection of subfields.`
	}
	for {
		tok = l.next()
		switch tok {
		case "}":
			if len(sel.outer) == 0 {
				return nil, parseFail
			}
			if l.next() != "}" {
				return nil, parseFail
			}
			return sel, ""
		case "key", "event":
			sel.outer = append(sel.outer, tok)
		case "data":
			if l.next() != "{" {
				return nil, `Field "data" of type "` + sel.collection + `" must have a selection of subfields.`
			}
			for {
				f := l.next()
				if f == "}" {
					break
				}
				if !isGQLNameByte(firstByte(f), true) {
					return nil, parseFail
				}
				sel.fields = append(sel.fields, f)
			}
			sel.outer = append(sel.outer, "data")
		case "":
			return nil, parseFail
		default:
			return nil, `Cannot query field "` + tok + `" on type "` + field + `".`
		}
	}
}

func firstByte(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}
