package directustest

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// queryParams is a parsed, structurally validated Directus query. It does
// not depend on a collection; compileQuery resolves the field names.
type queryParams struct {
	fields    []string // nil means "*"
	filter    *filterNode
	filterKey string // canonical encoding of the filter, for caching
	sort      []string
	limit     int
	hasLimit  bool
	offset    int
	page      int
	meta      []string // subset of "total_count", "filter_count", in that order
	aggregate []aggregateSpec
	groupBy   []string
}

// parseQuery validates a query object (already decoded and normalised).
// Unsupported keys (deep, search, alias, ...) are ignored.
func parseQuery(q map[string]any) (*queryParams, *dxError) {
	p := &queryParams{}
	if q == nil {
		return p, nil
	}
	if v, ok := q["fields"]; ok && v != nil {
		fields, err := stringList(v, "fields")
		if err != nil {
			return nil, err
		}
		p.fields = fields
	}
	if v, ok := q["filter"]; ok && v != nil {
		if s, isStr := v.(string); isStr {
			// REST passes the filter as a JSON string.
			var decoded any
			if err := decodeJSON([]byte(s), &decoded); err != nil {
				return nil, errInvalidQuery(`"filter" has to be a valid JSON object`)
			}
			v = decoded
		}
		f, err := parseFilter(v)
		if err != nil {
			return nil, err
		}
		p.filter = f
		p.filterKey = string(appendValue(nil, v))
	}
	if v, ok := q["sort"]; ok && v != nil {
		sort, err := stringList(v, "sort")
		if err != nil {
			return nil, err
		}
		p.sort = sort
	}
	if v, ok := q["limit"]; ok && v != nil {
		n, err := intParam(v, "limit")
		if err != nil {
			return nil, err
		}
		p.limit, p.hasLimit = n, true
	}
	if v, ok := q["offset"]; ok && v != nil {
		n, err := intParam(v, "offset")
		if err != nil {
			return nil, err
		}
		if n > 0 {
			p.offset = n
		}
	}
	if v, ok := q["page"]; ok && v != nil {
		n, err := intParam(v, "page")
		if err != nil {
			return nil, err
		}
		p.page = n
	}
	if v, ok := q["aggregate"]; ok && v != nil {
		a, err := parseAggregate(v)
		if err != nil {
			return nil, err
		}
		p.aggregate = a
	}
	if v, ok := q["groupBy"]; ok && v != nil {
		g, err := stringList(v, "groupBy")
		if err != nil {
			return nil, err
		}
		p.groupBy = g
	}
	if v, ok := q["meta"]; ok && v != nil {
		names, err := stringList(v, "meta")
		if err != nil {
			return nil, err
		}
		var total, filtered bool
		for _, n := range names {
			switch n {
			case "*":
				total, filtered = true, true
			case "total_count":
				total = true
			case "filter_count":
				filtered = true
			}
		}
		if total {
			p.meta = append(p.meta, "total_count")
		}
		if filtered {
			p.meta = append(p.meta, "filter_count")
		}
	}
	return p, nil
}

// stringList accepts an array of strings or a comma-separated string, and
// splits array entries on commas too (as Directus' sanitizeQuery does).
func stringList(v any, name string) ([]string, *dxError) {
	var parts []string
	switch x := v.(type) {
	case string:
		parts = strings.Split(x, ",")
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, errInvalidQuery(`"` + name + `" has to be an array of strings`)
			}
			parts = append(parts, strings.Split(s, ",")...)
		}
	default:
		return nil, errInvalidQuery(`"` + name + `" has to be an array or a comma-separated string`)
	}
	out := parts[:0]
	for _, s := range parts {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

func intParam(v any, name string) (int, *dxError) {
	switch x := v.(type) {
	case int64:
		return int(x), nil
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		if err == nil {
			return n, nil
		}
	}
	return 0, errInvalidQuery(`"` + name + `" has to be a number`)
}

// compiledQuery is a query resolved against one collection.
type compiledQuery struct {
	p         *queryParams
	fieldIdx  []int
	fieldsSig string
	allFields bool // every field in schema order: the row encoding cache applies
	filter    *filterExpr
	sort      []sortKey
	aggIdx    [][]int // per p.aggregate entry, the fields' indexes (-1 for "*")
	groupIdx  []int
}

type sortKey struct {
	idx  int
	desc bool
}

// compileQuery resolves field names; unknown ones give the FORBIDDEN field
// error of Directus.
func compileQuery(c *collection, p *queryParams) (*compiledQuery, *dxError) {
	cq := &compiledQuery{p: p}
	fields := p.fields
	if fields == nil {
		fields = []string{"*"}
	}
	seen := make(map[int]bool, len(c.fields))
	for _, f := range fields {
		if strings.HasPrefix(f, "*") {
			for i := range c.fields {
				if !seen[i] {
					seen[i] = true
					cq.fieldIdx = append(cq.fieldIdx, i)
				}
			}
			continue
		}
		name := f
		if i := strings.IndexByte(name, '.'); i >= 0 {
			name = name[:i]
		}
		idx, ok := c.fieldIdx[name]
		if !ok || name != f {
			return nil, errForbiddenField(name, c.name)
		}
		if !seen[idx] {
			seen[idx] = true
			cq.fieldIdx = append(cq.fieldIdx, idx)
		}
	}
	cq.allFields = len(cq.fieldIdx) == len(c.fields)
	for i, idx := range cq.fieldIdx {
		if idx != i {
			cq.allFields = false
		}
	}
	sig := make([]string, len(cq.fieldIdx))
	for i, idx := range cq.fieldIdx {
		sig[i] = strconv.Itoa(idx)
	}
	cq.fieldsSig = strings.Join(sig, ",")
	if p.filter != nil {
		f, err := p.filter.compile(c)
		if err != nil {
			return nil, err
		}
		cq.filter = f
	}
	for _, s := range p.sort {
		desc := strings.HasPrefix(s, "-")
		name := strings.TrimPrefix(s, "-")
		idx, ok := c.fieldIdx[name]
		if !ok {
			return nil, errForbiddenField(name, c.name)
		}
		cq.sort = append(cq.sort, sortKey{idx: idx, desc: desc})
	}
	if err := cq.compileAggregate(c); err != nil {
		return nil, err
	}
	return cq, nil
}

func (cq *compiledQuery) matches(r *row) bool {
	return cq.filter == nil || cq.filter.match(r.vals)
}

// order sorts rows by the query's sort, then by primary key. Rows must come
// in primary-key order already.
func (cq *compiledQuery) order(rows []*row) {
	if len(cq.sort) == 0 {
		return
	}
	slices.SortStableFunc(rows, func(a, b *row) int {
		for _, k := range cq.sort {
			c := sortCompare(a.vals[k.idx], b.vals[k.idx])
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
}

// window applies offset/page and limit. defaultLimit is used when the query
// sets no limit; a negative limit means all rows.
func (cq *compiledQuery) window(rows []*row, defaultLimit int) []*row {
	limit := defaultLimit
	if cq.p.hasLimit {
		limit = cq.p.limit
	}
	offset := cq.p.offset
	if cq.p.page > 0 && limit > 0 {
		offset = limit * (cq.p.page - 1)
	}
	if offset > 0 {
		if offset >= len(rows) {
			return nil
		}
		rows = rows[offset:]
	}
	if limit >= 0 && limit < len(rows) {
		rows = rows[:limit]
	}
	return rows
}

// readByQuery is ItemsService.readByQuery: filter, sort, offset, limit.
func (c *collection) readByQuery(cq *compiledQuery, defaultLimit int) []*row {
	var out []*row
	if cq.aggregated() {
		// The limit applies to the groups (appendAggregate).
		for _, r := range c.sorted {
			if cq.matches(r) {
				out = append(out, r)
			}
		}
		return out
	}
	if cq.filter == nil && len(cq.sort) == 0 {
		// Fast path: a window of the sorted rows.
		return cq.window(c.sorted, defaultLimit)
	}
	for _, r := range c.sorted {
		if cq.matches(r) {
			out = append(out, r)
		}
	}
	cq.order(out)
	return cq.window(out, defaultLimit)
}

// readMany is ItemsService.readMany: the query with the filter
// {pk: {_in: keys}} added, and a default limit of len(keys).
func (c *collection) readMany(keys []any, cq *compiledQuery) []*row {
	seen := make(map[string]bool, len(keys))
	var out []*row
	for _, k := range keys {
		r, ok := c.lookup(k)
		if !ok || seen[r.ckey] {
			continue
		}
		seen[r.ckey] = true
		if cq.matches(r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, c.keyLess)
	if cq.aggregated() {
		return out // the limit applies to the groups
	}
	cq.order(out)
	return cq.window(out, len(keys))
}

// readOne is ItemsService.readOne: the row if it exists and matches.
func (c *collection) readOne(key any, cq *compiledQuery) (*row, bool) {
	r, ok := c.lookup(key)
	if !ok || !cq.matches(r) {
		return nil, false
	}
	return r, true
}

// appendRow encodes the projection of r.
func (cq *compiledQuery) appendRow(b []byte, c *collection, r *row) []byte {
	if cq.allFields {
		if r.enc == nil {
			r.enc = cq.appendFields(nil, c, r)
		}
		return append(b, r.enc...)
	}
	return cq.appendFields(b, c, r)
}

func (cq *compiledQuery) appendFields(b []byte, c *collection, r *row) []byte {
	b = append(b, '{')
	for i, idx := range cq.fieldIdx {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, c.fields[idx])
		b = append(b, ':')
		b = appendValue(b, r.vals[idx])
	}
	return append(b, '}')
}

func (cq *compiledQuery) appendRows(b []byte, c *collection, rows []*row) []byte {
	if cq.aggregated() {
		return cq.appendAggregate(b, c, rows)
	}
	b = append(b, '[')
	for i, r := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = cq.appendRow(b, c, r)
	}
	return append(b, ']')
}

// appendMeta encodes the meta object the query asks for. It returns b
// unchanged (and false) when no meta was requested.
func (cq *compiledQuery) appendMeta(b []byte, c *collection) ([]byte, bool) {
	if len(cq.p.meta) == 0 {
		return b, false
	}
	b = append(b, '{')
	for i, m := range cq.p.meta {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, m)
		b = append(b, ':')
		switch m {
		case "total_count":
			b = strconv.AppendInt(b, int64(len(c.rows)), 10)
		case "filter_count":
			b = strconv.AppendInt(b, int64(cq.filterCount(c)), 10)
		}
	}
	return append(b, '}'), true
}

func (cq *compiledQuery) filterCount(c *collection) int {
	if cq.filter == nil {
		return len(c.rows)
	}
	n := 0
	for _, r := range c.sorted {
		if cq.filter.match(r.vals) {
			n++
		}
	}
	return n
}

// sortCompare orders values like SQLite: NULL < numbers < text < others.
func sortCompare(a, b any) int {
	ra, rb := sortRank(a), sortRank(b)
	if ra != rb {
		return cmp.Compare(ra, rb)
	}
	switch ra {
	case 1:
		fa, _ := toNumber(a)
		fb, _ := toNumber(b)
		return cmp.Compare(fa, fb)
	case 2:
		return strings.Compare(a.(string), b.(string))
	case 3:
		return strings.Compare(string(appendValue(nil, a)), string(appendValue(nil, b)))
	}
	return 0
}

func sortRank(v any) int {
	switch v.(type) {
	case nil:
		return 0
	case int64, float64, bool:
		return 1
	case string:
		return 2
	default:
		return 3
	}
}
