package filter

import (
	"errors"
	"slices"
	"testing"
)

func TestMatch(t *testing.T) {
	row := `{"id":1,"title":"Hello World","status":"published","views":12,"score":null,"flag":true,"big":"12.50","day":"2024-01-31","tags":[],"under":"a_b"}`
	cases := []struct {
		filter string
		want   Result
	}{
		{`{"status":{"_eq":"published"}}`, Yes},
		{`{"status":"published"}`, Yes},
		{`{"status":{"_eq":"draft"}}`, No},
		{`{"status":{"_neq":"draft"}}`, Yes},
		{`{"views":{"_gt":"5"}}`, Yes},
		{`{"views":{"_gt":12}}`, No},
		{`{"views":{"_gte":12}}`, Yes},
		{`{"views":{"_lt":"100"}}`, Yes},
		{`{"views":{"_lte":11}}`, No},
		{`{"views":{"_eq":"12"}}`, Yes},
		{`{"views":{"_in":[1,2,"12"]}}`, Yes},
		{`{"views":{"_in":"1,2,12"}}`, Yes},
		{`{"views":{"_nin":[1,2]}}`, Yes},
		{`{"views":{"_nin":[12]}}`, No},
		{`{"views":{"_between":[10,"20"]}}`, Yes},
		{`{"views":{"_nbetween":[10,20]}}`, No},
		{`{"views":{"_between":[13,20]}}`, No},
		{`{"score":{"_null":true}}`, Yes},
		{`{"score":{"_nnull":true}}`, No},
		{`{"score":{"_null":false}}`, No},
		{`{"views":{"_nnull":"true"}}`, Yes},
		{`{"score":{"_neq":5}}`, No},     // NULL <> 5 is not true
		{`{"score":{"_nin":[5]}}`, No},   // nor NOT IN
		{`{"score":{"_eq":null}}`, Yes},  // IS NULL
		{`{"views":{"_neq":null}}`, Yes}, // IS NOT NULL
		{`{"score":{"_empty":true}}`, Yes},
		{`{"title":{"_empty":true}}`, No},
		{`{"title":{"_nempty":true}}`, Yes},
		{`{"tags":{"_empty":true}}`, Unknown},
		{`{"title":{"_contains":"World"}}`, Yes},
		{`{"title":{"_contains":"world"}}`, Unknown}, // SQLite's LIKE folds ASCII, Postgres's does not
		{`{"title":{"_contains":"xyz"}}`, No},
		{`{"title":{"_ncontains":"xyz"}}`, Yes},
		{`{"title":{"_icontains":"WORLD"}}`, Yes},
		{`{"title":{"_starts_with":"Hello"}}`, Yes},
		{`{"title":{"_nstarts_with":"Hello"}}`, No},
		{`{"title":{"_istarts_with":"hello"}}`, Yes},
		{`{"title":{"_ends_with":"World"}}`, Yes},
		{`{"title":{"_nends_with":"x"}}`, Yes},
		{`{"title":{"_iends_with":"WORLD"}}`, Yes},
		{`{"under":{"_contains":"a_b"}}`, Yes},
		{`{"title":{"_contains":"o_W"}}`, Unknown}, // _ is a wildcard: "o W" matches it
		{`{"flag":{"_eq":true}}`, Yes},
		{`{"flag":{"_eq":"false"}}`, No},
		{`{"big":{"_eq":12.5}}`, Unknown}, // a decimal shown as text
		{`{"day":{"_eq":"2024-01-31"}}`, Yes},
		{`{"day":{"_gt":"2024-01-01"}}`, Unknown},
		{`{"title":{"_gt":"A"}}`, Yes},
		{`{"title":{"_gt":"h"}}`, Unknown}, // binary and case-folding collations disagree
		{`{"missing":{"_eq":1}}`, Unknown},
		{`{"_or":[{"status":{"_eq":"draft"}},{"views":{"_gt":10}}]}`, Yes},
		{`{"_or":[{"status":{"_eq":"draft"}},{"views":{"_gt":20}}]}`, No},
		{`{"_and":[{"status":{"_eq":"published"}},{"views":{"_gt":20}}]}`, No},
		{`{"_or":[{"missing":{"_eq":1}},{"views":{"_gt":20}}]}`, Unknown},
		{`{"_and":[{"missing":{"_eq":1}},{"views":{"_gt":20}}]}`, No},
		{`{"status":{"_eq":"published"},"views":{"_gt":20}}`, No},
		{`{"views":{"_gt":5,"_lt":10}}`, No},
		{`{}`, Yes},
	}
	for _, c := range cases {
		f, err := ParseJSON([]byte(c.filter))
		if err != nil {
			t.Errorf("%s: %v", c.filter, err)
			continue
		}
		if got := f.MatchJSON([]byte(row)); got != c.want {
			t.Errorf("%s: %v, want %v", c.filter, got, c.want)
		}
	}
}

func TestNotLocal(t *testing.T) {
	for _, s := range []string{
		`{"author":{"name":{"_eq":"x"}}}`,
		`{"author.name":{"_eq":"x"}}`,
		`{"owner":{"_eq":"$CURRENT_USER"}}`,
		`{"date":{"_lte":"$NOW"}}`,
		`{"role":{"_in":["$CURRENT_ROLE"]}}`,
		`{"tags":{"_some":{"name":{"_eq":"a"}}}}`,
		`{"tags":{"_none":{"name":{"_eq":"a"}}}}`,
		`{"title":{"_regex":"^a"}}`,
		`{"geo":{"_intersects":{"type":"Point"}}}`,
		`{"title":{"_unknown":1}}`,
		`{"year(date)":{"_eq":2024}}`,
		`{"_and":{"a":1}}`,
		`{"_not":[]}`,
		`{"views":{"_between":[1]}}`,
		`{"views":{"_lt":null}}`,
		`{"views":{"_eq":[1]}}`,
		`[1]`,
		`{"a":{}}`,
	} {
		_, err := ParseJSON([]byte(s))
		var nl *NotLocalError
		if !errors.Is(err, ErrNotLocal) || !errors.As(err, &nl) || nl.Reason == "" {
			t.Errorf("%s: %v, want a NotLocalError", s, err)
		}
	}
}

func TestFields(t *testing.T) {
	f, err := Parse(map[string]any{"_or": []any{
		map[string]any{"views": map[string]any{"_gt": 80}},
		map[string]any{"status": "draft", "views": map[string]any{"_in": []int{1, 2}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Fields(); !slices.Equal(got, []string{"status", "views"}) {
		t.Fatalf("fields %v", got)
	}
	if r := f.Match(map[string]any{"views": 2.0, "status": "draft"}); r != Yes {
		t.Fatalf("Go values: %v", r)
	}
}

func TestDepthBound(t *testing.T) {
	s := `{"a":1}`
	for range maxDepth + 2 {
		s = `{"_and":[` + s + `]}`
	}
	if _, err := ParseJSON([]byte(s)); !errors.Is(err, ErrNotLocal) {
		t.Fatalf("deep filter: %v", err)
	}
}

// FuzzFilter: no input makes the parser or the evaluator panic, every
// refusal is a NotLocalError, and a filter's answer does not depend on
// whether it is wrapped in _and or _or of one.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		`{"status":{"_eq":"published"}}`, `{"views":{"_gt":"5"}}`, `{"_or":[{"a":{"_in":[1,"2"]}},{"b":{"_null":true}}]}`,
		`{"t":{"_icontains":"É"}}`, `{"t":{"_between":["a","b"]}}`, `{"t":"x"}`, `{"a":{"_empty":"1"}}`,
	} {
		f.Add([]byte(s), []byte(`{"status":"published","views":7,"a":null,"b":[1],"t":"éa%"}`))
	}
	f.Fuzz(func(t *testing.T, filter, row []byte) {
		flt, err := ParseJSON(filter)
		if err != nil {
			if !errors.Is(err, ErrNotLocal) {
				t.Fatalf("error %v is not ErrNotLocal", err)
			}
			return
		}
		_ = flt.Fields()
		got := flt.MatchJSON(row)
		for _, wrap := range []string{`{"_and":[`, `{"_or":[`} {
			w, err := ParseJSON([]byte(wrap + string(filter) + `]}`))
			if err != nil {
				continue // the nesting bound
			}
			if r := w.MatchJSON(row); r != got {
				t.Fatalf("%s of one: %v, alone %v", wrap, r, got)
			}
		}
	})
}
