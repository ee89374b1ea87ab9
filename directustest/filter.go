package directustest

import (
	"slices"
	"strconv"
	"strings"
)

// filterNode is a parsed Directus filter, independent of a collection.
type filterNode struct {
	logic    string // "_and", "_or", or "" for a field condition
	children []*filterNode
	field    string
	op       string
	val      any
	list     []any
}

// Operators by the kind of value they take.
var (
	primitiveOps = []string{
		"_eq", "_neq", "_lt", "_lte", "_gt", "_gte",
		"_contains", "_ncontains", "_icontains", "_nicontains",
		"_starts_with", "_nstarts_with", "_istarts_with", "_nistarts_with",
		"_ends_with", "_nends_with", "_iends_with", "_niends_with",
	}
	listOps    = []string{"_in", "_nin", "_between", "_nbetween"}
	booleanOps = []string{"_null", "_nnull", "_empty", "_nempty"}
)

// parseFilter validates a filter object. Errors are INVALID_QUERY, with the
// message Directus uses for a bad _eq value (E6).
func parseFilter(v any) (*filterNode, *dxError) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errInvalidQuery(`"filter" has to be an object`)
	}
	keys := sortedKeys(obj)
	and := &filterNode{logic: "_and"}
	for _, k := range keys {
		val := obj[k]
		switch k {
		case "_and", "_or":
			list, ok := val.([]any)
			if !ok {
				return nil, errInvalidQuery(`The filter value for "` + k + `" has to be an array of filters`)
			}
			n := &filterNode{logic: k}
			for _, e := range list {
				child, err := parseFilter(e)
				if err != nil {
					return nil, err
				}
				n.children = append(n.children, child)
			}
			and.children = append(and.children, n)
		default:
			if strings.HasPrefix(k, "_") {
				return nil, errInvalidQuery(`Invalid filter operator "` + k + `"`)
			}
			conds, err := parseFieldFilter(k, val)
			if err != nil {
				return nil, err
			}
			and.children = append(and.children, conds...)
		}
	}
	if len(and.children) == 1 {
		return and.children[0], nil
	}
	return and, nil
}

func parseFieldFilter(field string, val any) ([]*filterNode, *dxError) {
	ops, ok := val.(map[string]any)
	if !ok {
		// {"field": value} is read as {"field": {"_eq": value}}.
		ops = map[string]any{"_eq": val}
	}
	var out []*filterNode
	for _, op := range sortedKeys(ops) {
		v := ops[op]
		n := &filterNode{field: field, op: op, val: v}
		switch {
		case slices.Contains(primitiveOps, op):
			switch v.(type) {
			case nil, string, int64, float64, bool:
			default:
				return nil, errInvalidQuery(`The filter value for "` + op + `" has to be a string, number, or boolean`)
			}
		case slices.Contains(listOps, op):
			switch x := v.(type) {
			case []any:
				n.list = x
			case string:
				for _, s := range strings.Split(x, ",") {
					n.list = append(n.list, s)
				}
			default:
				return nil, errInvalidQuery(`The filter value for "` + op + `" has to be an array of values`)
			}
			if (op == "_between" || op == "_nbetween") && len(n.list) != 2 {
				return nil, errInvalidQuery(`The filter value for "` + op + `" has to be an array of two values`)
			}
		case slices.Contains(booleanOps, op):
			b, ok := boolParam(v)
			if !ok {
				return nil, errInvalidQuery(`The filter value for "` + op + `" has to be a boolean`)
			}
			n.val = b
		case strings.HasPrefix(op, "_"):
			return nil, errInvalidQuery(`Invalid filter operator "` + op + `"`)
		default:
			// A nested (relational) filter: there are no relations here, so
			// the field can only be unknown, or not relational.
			n.op = "_relational"
		}
		out = append(out, n)
	}
	return out, nil
}

func boolParam(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		switch x {
		case "true", "1":
			return true, true
		case "false", "0":
			return false, true
		}
	case int64:
		return x != 0, true
	}
	return false, false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// filterExpr is a filter bound to a collection's field indexes.
type filterExpr struct {
	logic    string
	children []*filterExpr
	idx      int
	op       string
	val      any
	list     []any
}

func (n *filterNode) compile(c *collection) (*filterExpr, *dxError) {
	if n.logic != "" {
		e := &filterExpr{logic: n.logic}
		for _, ch := range n.children {
			ce, err := ch.compile(c)
			if err != nil {
				return nil, err
			}
			e.children = append(e.children, ce)
		}
		return e, nil
	}
	idx, ok := c.fieldIdx[n.field]
	if !ok {
		return nil, errForbiddenField(n.field, c.name)
	}
	if n.op == "_relational" {
		return nil, errInvalidQuery(`Field "` + n.field + `" is not a relational field`)
	}
	if idx == c.pkIdx && c.keyType == IntegerKey && !n.numericOperands() {
		// As Directus: the operand of an integer field must read as a
		// number, else the whole query is refused.
		return nil, errInvalidQuery("Invalid numeric value")
	}
	return &filterExpr{idx: idx, op: n.op, val: n.val, list: n.list}, nil
}

// numericOperands reports whether every operand of a comparison reads as a
// number (a JSON number, or a string of one, as REST query strings carry
// them). Operators that take no value of the field (_null, _empty, …) have
// nothing to check.
func (n *filterNode) numericOperands() bool {
	switch n.op {
	case "_eq", "_neq", "_lt", "_lte", "_gt", "_gte", "_in", "_nin", "_between", "_nbetween":
	default:
		return true
	}
	numeric := func(v any) bool {
		s, ok := v.(string)
		if !ok {
			return true
		}
		for _, part := range strings.Split(s, ",") { // "1,2" in a REST _in
			part = strings.TrimSpace(part)
			if strings.HasPrefix(part, "$") {
				continue // a dynamic variable, resolved by the server
			}
			if _, err := strconv.ParseFloat(part, 64); err != nil {
				return false
			}
		}
		return true
	}
	if !numeric(n.val) {
		return false
	}
	for _, v := range n.list {
		if !numeric(v) {
			return false
		}
	}
	return true
}

// match evaluates the filter with SQL semantics: a NULL field value matches
// no comparison (not even _neq or _nin), only _null/_empty.
func (e *filterExpr) match(vals []any) bool {
	switch e.logic {
	case "_and":
		for _, c := range e.children {
			if !c.match(vals) {
				return false
			}
		}
		return true
	case "_or":
		for _, c := range e.children {
			if c.match(vals) {
				return true
			}
		}
		return false
	}
	v := vals[e.idx]
	switch e.op {
	case "_null":
		return (v == nil) == e.val.(bool)
	case "_nnull":
		return (v != nil) == e.val.(bool)
	case "_empty":
		return isEmpty(v) == e.val.(bool)
	case "_nempty":
		return !isEmpty(v) == e.val.(bool)
	case "_eq":
		if e.val == nil {
			return v == nil
		}
		return v != nil && looseEqual(v, e.val)
	case "_neq":
		if e.val == nil {
			return v != nil
		}
		return v != nil && !looseEqual(v, e.val)
	}
	if v == nil {
		return false
	}
	switch e.op {
	case "_lt", "_lte", "_gt", "_gte":
		if e.val == nil {
			return false
		}
		c := looseCompare(v, e.val)
		switch e.op {
		case "_lt":
			return c < 0
		case "_lte":
			return c <= 0
		case "_gt":
			return c > 0
		default:
			return c >= 0
		}
	case "_in", "_nin":
		found := false
		for _, x := range e.list {
			if x != nil && looseEqual(v, x) {
				found = true
				break
			}
		}
		return found == (e.op == "_in")
	case "_between", "_nbetween":
		in := looseCompare(v, e.list[0]) >= 0 && looseCompare(v, e.list[1]) <= 0
		return in == (e.op == "_between")
	}
	// String operators.
	if e.val == nil {
		return false
	}
	hay, needle := textOf(v), textOf(e.val)
	negate := strings.HasPrefix(e.op, "_n")
	op := strings.TrimPrefix(e.op, "_n")
	op = strings.TrimPrefix(op, "_")
	if strings.HasPrefix(op, "i") {
		hay, needle = strings.ToLower(hay), strings.ToLower(needle)
		op = op[1:]
	}
	var r bool
	switch op {
	case "contains":
		r = strings.Contains(hay, needle)
	case "starts_with":
		r = strings.HasPrefix(hay, needle)
	case "ends_with":
		r = strings.HasSuffix(hay, needle)
	}
	return r != negate
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	}
	return false
}

// toNumber converts numbers, booleans (as 1/0) and numeric strings.
func toNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil && strings.TrimSpace(x) != ""
	}
	return 0, false
}

func isNumeric(v any) bool {
	switch v.(type) {
	case int64, float64, bool:
		return true
	}
	return false
}

// looseEqual compares like SQL with column affinity: a number equals a
// numeric string with the same value.
func looseEqual(a, b any) bool {
	if isNumeric(a) || isNumeric(b) {
		fa, oka := toNumber(a)
		fb, okb := toNumber(b)
		return oka && okb && fa == fb
	}
	sa, oka := a.(string)
	sb, okb := b.(string)
	if oka && okb {
		return sa == sb
	}
	return string(appendValue(nil, a)) == string(appendValue(nil, b))
}

func looseCompare(a, b any) int {
	if isNumeric(a) || isNumeric(b) {
		fa, oka := toNumber(a)
		fb, okb := toNumber(b)
		if oka && okb {
			switch {
			case fa < fb:
				return -1
			case fa > fb:
				return 1
			}
			return 0
		}
	}
	return sortCompare(a, b)
}

func textOf(v any) string {
	switch x := v.(type) {
	case string:
		return x
	default:
		return string(appendValue(nil, x))
	}
}
