package directustest

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// restQuery turns the query string into a Directus query object: fields,
// sort, limit, offset, page, meta, groupBy, aggregate in bracket syntax
// (aggregate[count]=*), and filter as JSON or in bracket syntax
// (filter[status][_eq]=published).
func restQuery(values url.Values) map[string]any {
	q := map[string]any{}
	list := func(name string) []any {
		var out []any
		for _, k := range []string{name, name + "[]"} {
			for _, v := range values[k] {
				out = append(out, v)
			}
		}
		return out
	}
	if f := list("fields"); f != nil {
		q["fields"] = f
	}
	if f := list("sort"); f != nil {
		q["sort"] = f
	}
	if f := list("groupBy"); f != nil {
		q["groupBy"] = f
	}
	// aggregate[count]=* and aggregate[sum]=views,likes
	for k, vs := range values {
		fn, ok := strings.CutPrefix(k, "aggregate[")
		if !ok || !strings.HasSuffix(fn, "]") || len(vs) == 0 {
			continue
		}
		agg, _ := q["aggregate"].(map[string]any)
		if agg == nil {
			agg = map[string]any{}
			q["aggregate"] = agg
		}
		agg[strings.TrimSuffix(fn, "]")] = vs[0]
	}
	for _, k := range []string{"limit", "offset", "page", "meta", "filter"} {
		if v := values.Get(k); v != "" {
			q[k] = v
		}
	}
	var bracket map[string]any
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, "filter[") {
			continue
		}
		path, ok := bracketPath(k[len("filter"):])
		if !ok || len(path) == 0 {
			continue
		}
		if bracket == nil {
			bracket = map[string]any{}
		}
		setPath(bracket, path, values.Get(k))
	}
	if bracket != nil {
		q["filter"] = arraysFromIndexes(bracket)
	}
	return q
}

func bracketPath(s string) ([]string, bool) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, false
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, false
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	return out, true
}

func setPath(m map[string]any, path []string, v string) {
	for i, p := range path {
		if i == len(path)-1 {
			m[p] = v
			return
		}
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
}

// arraysFromIndexes converts maps whose keys are all indexes (0, 1, ...)
// into arrays, as the qs parser does.
func arraysFromIndexes(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	allIdx := len(m) > 0
	for k, e := range m {
		m[k] = arraysFromIndexes(e)
		if _, err := strconv.Atoi(k); err != nil {
			allIdx = false
		}
	}
	if !allIdx {
		return m
	}
	idx := make([]int, 0, len(m))
	for k := range m {
		n, _ := strconv.Atoi(k)
		idx = append(idx, n)
	}
	sort.Ints(idx)
	out := make([]any, 0, len(idx))
	for _, n := range idx {
		out = append(out, m[strconv.Itoa(n)])
	}
	return out
}
