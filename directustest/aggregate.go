package directustest

import (
	"cmp"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// Aggregates (docs/PROTOCOL.md §5.5): "aggregate" maps a function to the
// fields it applies to, "groupBy" names the fields whose values form the
// groups. The answer is one object per group: the group's field values,
// then each function, as Directus on SQLite writes them: count of "*" is a
// bare number, every other function an object by field. Subscription
// events of an aggregated query carry the aggregate of the changed rows
// alone, as Directus's do.

// aggregateFuncs are the functions, in the order they are written.
var aggregateFuncs = []string{"count", "countDistinct", "countAll", "sum", "sumDistinct", "avg", "avgDistinct", "min", "max"}

type aggregateSpec struct {
	fn     string
	fields []string // "*" for count
}

func parseAggregate(v any) ([]aggregateSpec, *dxError) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errInvalidQuery(`"aggregate" has to be an object`)
	}
	var out []aggregateSpec
	for _, fn := range aggregateFuncs {
		fv, ok := obj[fn]
		if !ok {
			continue
		}
		if fn == "countAll" {
			out = append(out, aggregateSpec{fn: fn})
			continue
		}
		fields, err := stringList(fv, "aggregate."+fn)
		if err != nil {
			return nil, err
		}
		out = append(out, aggregateSpec{fn: fn, fields: fields})
	}
	for fn := range obj {
		if !slices.Contains(aggregateFuncs, fn) {
			return nil, errInvalidQuery(`"aggregate" has an unknown function "` + fn + `"`)
		}
	}
	return out, nil
}

// compileAggregate resolves the aggregate's and groupBy's field names.
func (cq *compiledQuery) compileAggregate(c *collection) *dxError {
	cq.aggIdx = make([][]int, len(cq.p.aggregate))
	for i, a := range cq.p.aggregate {
		for _, f := range a.fields {
			if f == "*" && (a.fn == "count" || a.fn == "countDistinct") {
				cq.aggIdx[i] = append(cq.aggIdx[i], -1)
				continue
			}
			idx, ok := c.fieldIdx[f]
			if !ok {
				return errForbiddenField(f, c.name)
			}
			cq.aggIdx[i] = append(cq.aggIdx[i], idx)
		}
	}
	for _, f := range cq.p.groupBy {
		idx, ok := c.fieldIdx[f]
		if !ok {
			return errForbiddenField(f, c.name)
		}
		cq.groupIdx = append(cq.groupIdx, idx)
	}
	return nil
}

func (cq *compiledQuery) aggregated() bool {
	return len(cq.p.aggregate) > 0 || len(cq.p.groupBy) > 0
}

// appendAggregate writes the groups of rows, in the order of their group
// values (NULL first, as SQLite's GROUP BY), limited as the query says.
func (cq *compiledQuery) appendAggregate(b []byte, c *collection, rows []*row) []byte {
	type group struct {
		vals []any
		rows []*row
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, r := range rows {
		vals := make([]any, len(cq.groupIdx))
		for i, idx := range cq.groupIdx {
			vals[i] = r.vals[idx]
		}
		key := string(appendValue(nil, vals))
		g := byKey[key]
		if g == nil {
			g = &group{vals: vals}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.rows = append(g.rows, r)
	}
	if len(cq.groupIdx) == 0 && len(groups) == 0 {
		groups = append(groups, &group{}) // an aggregate of no rows is one row
	}
	slices.SortStableFunc(groups, func(a, b *group) int {
		for i := range a.vals {
			if c := compareValues(a.vals[i], b.vals[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	if cq.p.hasLimit && cq.p.limit >= 0 && len(groups) > cq.p.limit {
		groups = groups[:cq.p.limit]
	}
	b = append(b, '[')
	for gi, g := range groups {
		if gi > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		n := 0
		field := func(name string) {
			if n > 0 {
				b = append(b, ',')
			}
			n++
			b = appendJSONString(b, name)
			b = append(b, ':')
		}
		for i, idx := range cq.groupIdx {
			field(c.fields[idx])
			b = appendValue(b, g.vals[i])
		}
		for ai, a := range cq.p.aggregate {
			field(a.fn)
			idxs := cq.aggIdx[ai]
			if a.fn == "countAll" || (len(idxs) == 1 && idxs[0] == -1) {
				b = strconv.AppendInt(b, int64(len(g.rows)), 10)
				continue
			}
			b = append(b, '{')
			for i, idx := range idxs {
				if i > 0 {
					b = append(b, ',')
				}
				name := "*"
				if idx >= 0 {
					name = c.fields[idx]
				}
				b = appendJSONString(b, name)
				b = append(b, ':')
				b = appendValue(b, aggregateOf(a.fn, idx, g.rows))
			}
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// aggregateOf computes fn over the field idx of rows; NULLs are skipped.
func aggregateOf(fn string, idx int, rows []*row) any {
	var vals []any
	for _, r := range rows {
		if idx < 0 {
			vals = append(vals, r.key)
			continue
		}
		if v := r.vals[idx]; v != nil {
			vals = append(vals, v)
		}
	}
	if strings.HasSuffix(fn, "Distinct") {
		seen := map[string]bool{}
		kept := vals[:0]
		for _, v := range vals {
			k := string(appendValue(nil, v))
			if !seen[k] {
				seen[k] = true
				kept = append(kept, v)
			}
		}
		vals = kept
		fn = strings.TrimSuffix(fn, "Distinct")
	}
	switch fn {
	case "count":
		return int64(len(vals))
	case "min", "max":
		if len(vals) == 0 {
			return nil
		}
		best := vals[0]
		for _, v := range vals[1:] {
			c := compareValues(v, best)
			if (fn == "min" && c < 0) || (fn == "max" && c > 0) {
				best = v
			}
		}
		return best
	}
	// sum and avg of the values that read as numbers
	var sum float64
	allInt, n := true, 0
	var isum int64
	for _, v := range vals {
		switch x := v.(type) {
		case int64:
			sum += float64(x)
			isum += x
		case int:
			sum += float64(x)
			isum += int64(x)
		default:
			f, ok := toFloat(v)
			if !ok {
				continue
			}
			allInt = false
			sum += f
		}
		n++
	}
	if n == 0 {
		return nil
	}
	if fn == "avg" {
		return sum / float64(n)
	}
	if allInt {
		return isum
	}
	return sum
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	}
	return 0, false
}

// compareValues orders values as SQLite does: NULL first, then numbers,
// then strings.
func compareValues(a, b any) int {
	rank := func(v any) int {
		switch v.(type) {
		case nil:
			return 0
		case string:
			return 2
		}
		return 1
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return cmp.Compare(ra, rb)
	}
	switch x := a.(type) {
	case nil:
		return 0
	case string:
		return strings.Compare(x, b.(string))
	}
	fa, _ := toFloat(normaliseNumber(a))
	fb, _ := toFloat(normaliseNumber(b))
	return cmp.Compare(fa, fb)
}

func normaliseNumber(v any) any {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case int:
		return float64(x)
	case bool:
		if x {
			return float64(1)
		}
		return float64(0)
	}
	return v
}
