package filter

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// kind is the JSON type of a value.
type kind uint8

const (
	kNull kind = iota
	kBool
	kNum
	kStr
	kOther // an array or an object (a JSON field): compared by nobody here
)

// value is a row's value or an operand, with its number read once.
type value struct {
	kind kind
	b    bool
	s    string  // the text of a string, or of a number
	n    float64 // a number's value; a string's when numOK
	// numOK: a string that reads as a number (the server compares "5"
	// with an integer field as 5).
	numOK bool
}

func valueOf(v any) value {
	switch x := v.(type) {
	case nil:
		return value{kind: kNull}
	case bool:
		return value{kind: kBool, b: x}
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return value{kind: kNum, s: string(x), n: f, numOK: err == nil && !math.IsInf(f, 0)}
	case float64:
		return value{kind: kNum, s: strconv.FormatFloat(x, 'f', -1, 64), n: x, numOK: !math.IsInf(x, 0) && !math.IsNaN(x)}
	case string:
		val := value{kind: kStr, s: x}
		t := strings.TrimSpace(x)
		if t != "" {
			if f, err := strconv.ParseFloat(t, 64); err == nil && !math.IsInf(f, 0) {
				val.n, val.numOK = f, true
			}
		}
		return val
	}
	return value{kind: kOther}
}

type cond struct {
	field string
	op    string
	val   value   // the operand of a one-value operator
	list  []value // the operands of _in, _nin, _between, _nbetween
	flag  bool    // the operand of _null, _nnull, _empty, _nempty
}

var (
	primitive = map[string]bool{
		"_eq": true, "_neq": true, "_lt": true, "_lte": true, "_gt": true, "_gte": true,
		"_contains": true, "_ncontains": true, "_icontains": true, "_nicontains": true,
		"_starts_with": true, "_nstarts_with": true, "_istarts_with": true, "_nistarts_with": true,
		"_ends_with": true, "_nends_with": true, "_iends_with": true, "_niends_with": true,
	}
	lists = map[string]bool{"_in": true, "_nin": true, "_between": true, "_nbetween": true}
	flags = map[string]bool{"_null": true, "_nnull": true, "_empty": true, "_nempty": true}
)

func parseCond(field, op string, v any) (*cond, error) {
	c := &cond{field: field, op: op}
	switch {
	case primitive[op]:
		val, err := operand(op, v)
		if err != nil {
			return nil, err
		}
		if val.kind == kNull && op != "_eq" && op != "_neq" {
			return nil, notLocal(op + " with null")
		}
		c.val = val
	case lists[op]:
		var items []any
		switch x := v.(type) {
		case []any:
			items = x
		case string:
			// The REST form: "1,2,3".
			for _, s := range strings.Split(x, ",") {
				items = append(items, s)
			}
		default:
			// A single value stands for a list of one.
			items = []any{v}
		}
		for _, it := range items {
			val, err := operand(op, it)
			if err != nil {
				return nil, err
			}
			if val.kind == kNull {
				return nil, notLocal(op + " with null in its list")
			}
			c.list = append(c.list, val)
		}
		if (op == "_between" || op == "_nbetween") && len(c.list) != 2 {
			return nil, notLocal(op + " takes two values")
		}
		if len(c.list) == 0 {
			return nil, notLocal(op + " with an empty list")
		}
	case flags[op]:
		switch x := v.(type) {
		case bool:
			c.flag = x
		case string:
			switch x {
			case "true", "1":
				c.flag = true
			case "false", "0":
			default:
				return nil, notLocal(op + " takes a boolean")
			}
		case json.Number:
			switch x {
			case "1":
				c.flag = true
			case "0":
			default:
				return nil, notLocal(op + " takes a boolean")
			}
		default:
			return nil, notLocal(op + " takes a boolean")
		}
	default:
		// _some, _none, _regex, _intersects …, and anything unknown.
		return nil, notLocal("operator " + op + " is not evaluated locally")
	}
	return c, nil
}

// operand reads one operand; variables ($NOW, $CURRENT_USER …) are resolved
// by the server alone.
func operand(op string, v any) (value, error) {
	val := valueOf(v)
	switch val.kind {
	case kOther:
		return val, notLocal(op + " takes a string, number or boolean")
	case kStr:
		if strings.HasPrefix(val.s, "$") {
			return val, notLocal("variable " + val.s)
		}
	case kNum:
		if !val.numOK {
			return val, notLocal("number " + val.s + " out of range")
		}
	}
	return val, nil
}

// eval applies the condition to a row's value. A null value matches
// nothing but _null, _empty and _eq null, as in SQL, where a comparison
// with NULL is not true (so neither _neq nor _nin nor _ncontains selects
// it).
func (c *cond) eval(v value) Result {
	switch c.op {
	case "_null":
		return of((v.kind == kNull) == c.flag)
	case "_nnull":
		return of((v.kind != kNull) == c.flag)
	case "_empty", "_nempty":
		var empty Result
		switch {
		case v.kind == kNull:
			empty = Yes
		case v.kind == kStr:
			empty = of(v.s == "")
		case v.kind == kOther:
			return Unknown // how a JSON field's [] or {} is stored is the database's
		default:
			empty = No
		}
		if (c.op == "_empty") != c.flag {
			empty = empty.not()
		}
		return empty
	}
	if (c.op == "_eq" || c.op == "_neq") && c.val.kind == kNull {
		// _eq null and _neq null: IS NULL, IS NOT NULL.
		return of((v.kind == kNull) == (c.op == "_eq"))
	}
	if v.kind == kNull {
		return No
	}
	switch c.op {
	case "_eq":
		return equal(v, c.val)
	case "_neq":
		return equal(v, c.val).not()
	case "_lt", "_lte", "_gt", "_gte":
		return order(c.op, v, c.val)
	case "_in", "_nin":
		in := No
		for _, x := range c.list {
			if in = or(in, equal(v, x)); in == Yes {
				break
			}
		}
		if c.op == "_nin" {
			return in.not()
		}
		return in
	case "_between", "_nbetween":
		in := and(order("_gte", v, c.list[0]), order("_lte", v, c.list[1]))
		if c.op == "_nbetween" {
			return in.not()
		}
		return in
	}
	return text(c.op, v, c.val)
}

// equal compares like the server's SQL would. It answers Unknown where
// databases differ: a string row against a number (SQLite compares as text
// or as number by column affinity, Postgres casts), dates (stored and
// shown in different formats), and JSON fields.
func equal(v, x value) Result {
	switch v.kind {
	case kNum:
		switch {
		case x.kind == kNum || (x.kind == kStr && x.numOK):
			return of(v.n == x.n)
		case x.kind == kBool:
			return of(v.n == boolNum(x.b))
		}
		return Unknown // a non-numeric operand on a number field is refused by the server
	case kBool:
		switch x.kind {
		case kBool:
			return of(v.b == x.b)
		case kNum:
			if x.n == 0 || x.n == 1 {
				return of(boolNum(v.b) == x.n)
			}
			return No
		case kStr:
			switch x.s {
			case "true", "1":
				return of(v.b)
			case "false", "0":
				return of(!v.b)
			}
		}
		return Unknown
	case kStr:
		if looksLikeTime(v.s) || (x.kind == kStr && looksLikeTime(x.s)) {
			if x.kind == kStr && v.s == x.s {
				return Yes
			}
			return Unknown
		}
		switch x.kind {
		case kStr:
			if v.numOK && x.numOK && (v.n == x.n) != (v.s == x.s) {
				return Unknown // "12.50" against "12.5": a decimal column says yes
			}
			return of(v.s == x.s)
		case kNum:
			asText := v.s == x.s
			if v.numOK && (v.n == x.n) != asText {
				return Unknown // "5.0" against 5: text says no, number says yes
			}
			return of(asText)
		}
		return Unknown
	}
	return Unknown
}

func boolNum(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// order answers v op x for _lt, _lte, _gt and _gte.
func order(op string, v, x value) Result {
	c, ok := compare(v, x)
	if !ok {
		return Unknown
	}
	switch op {
	case "_lt":
		return of(c < 0)
	case "_lte":
		return of(c <= 0)
	case "_gt":
		return of(c > 0)
	}
	return of(c >= 0)
}

func compare(v, x value) (int, bool) {
	switch v.kind {
	case kNum:
		if x.kind == kNum || (x.kind == kStr && x.numOK) {
			return cmpFloat(v.n, x.n), true
		}
	case kStr:
		if x.kind != kStr && x.kind != kNum {
			return 0, false
		}
		if looksLikeTime(v.s) || looksLikeTime(x.s) {
			return 0, false
		}
		bin := strings.Compare(v.s, x.s)
		// A collation other than binary may order letters by case, or
		// punctuation apart: only an answer both agree on is sure.
		if strings.Compare(strings.ToLower(v.s), strings.ToLower(x.s)) != bin {
			return 0, false
		}
		if x.kind == kNum || (v.numOK && x.numOK) {
			// Text against a number: SQLite's affinity may compare
			// either way.
			if !v.numOK || !x.numOK || cmpFloat(v.n, x.n) != bin {
				return 0, false
			}
		}
		return bin, true
	}
	return 0, false
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// looksLikeTime reports a value that starts like an ISO date (2024-01-31)
// or a time (10:30): the database may hold it in another format than the
// JSON shows, so only identical text is sure.
func looksLikeTime(s string) bool {
	isDigit := func(i int) bool { return i < len(s) && s[i] >= '0' && s[i] <= '9' }
	if len(s) >= 10 && isDigit(0) && isDigit(1) && isDigit(2) && isDigit(3) && s[4] == '-' && isDigit(5) && isDigit(6) && s[7] == '-' {
		return true
	}
	return len(s) >= 5 && isDigit(0) && isDigit(1) && s[2] == ':' && isDigit(3) && isDigit(4)
}

// text answers the string operators. The server runs them as LIKE, whose
// case sensitivity depends on the database (SQLite folds ASCII, Postgres
// does not) and whose % and _ in the needle are wildcards: the answer is
// sure only where every reading agrees.
func text(op string, v, x value) Result {
	if v.kind != kStr {
		return Unknown // a number's text is the database's (5 or 5.0)
	}
	if x.kind != kStr && x.kind != kNum {
		return Unknown
	}
	hay, needle := v.s, x.s
	negate := strings.HasPrefix(op, "_n")
	base := strings.TrimPrefix(strings.TrimPrefix(op, "_n"), "_")
	insensitive := strings.HasPrefix(base, "i")
	base = strings.TrimPrefix(base, "i")
	var test func(h, n string) bool
	switch base {
	case "contains":
		test = strings.Contains
	case "starts_with":
		test = strings.HasPrefix
	case "ends_with":
		test = strings.HasSuffix
	default:
		return Unknown
	}
	var r Result
	if insensitive {
		// LOWER() folds ASCII only on some databases, Unicode on others.
		ascii, uni := test(asciiLower(hay), asciiLower(needle)), test(strings.ToLower(hay), strings.ToLower(needle))
		if ascii != uni {
			return Unknown
		}
		r = of(ascii)
		if !ascii && strings.ContainsAny(needle, likeSpecial) {
			r = Unknown
		}
	} else {
		exact := test(hay, needle)
		folded := test(asciiLower(hay), asciiLower(needle))
		switch {
		case exact:
			r = Yes
		case folded, strings.ContainsAny(needle, likeSpecial):
			r = Unknown
		default:
			r = No
		}
	}
	if negate {
		return r.not()
	}
	return r
}

// likeSpecial are the characters of a LIKE pattern that are not literal:
// the wildcards, and the backslash Postgres escapes with.
const likeSpecial = `%_\`

// asciiLower folds A-Z only, as SQLite's LOWER and LIKE do.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
