package handlers_test

// Fuzz targets for the decoding of event data. Run them with
// scripts/fuzz.sh, or one at a time:
//
//	go test -run '^$' -fuzz '^FuzzKeys$' -fuzztime 60s ./handlers
//
// They are seeded with the data of every subscription frame of the recorded
// transcripts (delete keys in particular), so plain `go test` checks the
// properties on all of them.

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/internal/transcript"
)

// subscriptionData returns the "data" of every subscription frame of both
// transcripts, delete events first.
func subscriptionData() (deletes, others [][]byte) {
	for _, steps := range [][]transcript.Step{transcript.SQLite(), transcript.Postgres()} {
		for _, fr := range transcript.ServerFrames(steps) {
			var m struct {
				Type  string          `json:"type"`
				Event string          `json:"event"`
				Data  json.RawMessage `json:"data"`
			}
			if json.Unmarshal([]byte(fr), &m) != nil || m.Type != "subscription" || m.Data == nil {
				continue
			}
			if m.Event == "delete" {
				deletes = append(deletes, m.Data)
			} else {
				others = append(others, m.Data)
			}
		}
	}
	return deletes, others
}

// Edge cases for keys: int64 and float64 limits, exponents, -0, strings
// that look like numbers.
var keySeeds = []string{
	`0`, `-0`, `1521`, `"1521"`, `-1`, `9007199254740993`, `9223372036854775807`, `-9223372036854775808`,
	`9223372036854775808`, `18446744073709551616`, `1e3`, `1E3`, `1.0`, `1.5`, `-0.0`, `1e21`, `1e400`,
	`"7103850d-ae97-4b0b-9f55-9a1d1c4f6a0b"`, `" 12"`, `"12.0"`, `"\u0031"`, `""`, ` 42 `, `null`, `true`,
	`{}`, `[]`, `-`, `01`, `"`,
}

// canonicalInt is the text strconv.FormatInt (or big.Int) gives an integer.
var canonicalInt = regexp.MustCompile(`^(0|-?[1-9][0-9]*)$`)

func FuzzNormalizeKey(f *testing.F) {
	deletes, _ := subscriptionData()
	for _, d := range deletes {
		if d[0] == '[' {
			var raws []json.RawMessage
			if json.Unmarshal(d, &raws) == nil {
				for _, r := range raws {
					f.Add([]byte(r))
				}
			}
			continue
		}
		f.Add([]byte(d))
	}
	for _, s := range keySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkKey(t, raw)
	})
}

// checkKey checks the properties of NormalizeKey for one raw key.
func checkKey(t *testing.T, raw []byte) handlers.Key {
	t.Helper()
	k, err := handlers.NormalizeKey(raw)
	trimmed := bytes.TrimSpace(raw)
	kind := testutil.JSONKind(trimmed)
	if err != nil {
		if kind == "string" || kind == "number" {
			t.Fatalf("NormalizeKey(%q) rejected a JSON %s: %v", raw, kind, err)
		}
		return ""
	}
	switch kind {
	case "string":
		var s string
		_ = json.Unmarshal(trimmed, &s)
		if k != handlers.Key(s) {
			t.Fatalf("NormalizeKey(%q) = %q, want the string itself", raw, k)
		}
	case "number":
	default:
		t.Fatalf("NormalizeKey(%q) accepted a JSON %s as %q", raw, kind, k)
	}

	// Idempotence: the Key sent again as a JSON string is the same Key,
	// and a Key made from a number, sent again as that number, too.
	enc, _ := json.Marshal(string(k))
	if again, err := handlers.NormalizeKey(enc); err != nil || again != k {
		t.Fatalf("NormalizeKey(%s) = %q, %v; want %q", enc, again, err, k)
	}
	if kind == "number" {
		if again, err := handlers.NormalizeKey(json.RawMessage(k)); err != nil || again != k {
			t.Fatalf("number %q normalised to %q, and that to %q, %v", raw, k, again, err)
		}
		// KeyOf agrees for the same number as a json.Number.
		if viaKeyOf, err := handlers.KeyOf(json.Number(trimmed)); err != nil || viaKeyOf != k {
			t.Fatalf("KeyOf(json.Number(%q)) = %q, %v; NormalizeKey gives %q", trimmed, viaKeyOf, err, k)
		}
	}

	// An integer sent as a JSON number and as a JSON string gives the
	// same Key: its own text.
	if kind == "number" && canonicalInt.Match(trimmed) {
		asString, err := handlers.NormalizeKey(append(append([]byte{'"'}, trimmed...), '"'))
		if err != nil || asString != k || k != handlers.Key(trimmed) {
			t.Fatalf("integer %s: as a number %q, as a string %q (%v)", trimmed, k, asString, err)
		}
	}
	return k
}

func FuzzKeys(f *testing.F) {
	deletes, _ := subscriptionData()
	for _, d := range deletes {
		f.Add([]byte(d))
	}
	for _, s := range keySeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`["1521"]`, `[1523,1524,1525]`, `"1522"`, `["1",1,"01",1.0]`, `[]`, `[null]`, `[[1]]`, `[{"id":1}]`,
		`[1,`, ` [ 1 , "2" ] `, `[-9223372036854775808,"9223372036854775807"]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev := handlers.Event{Kind: handlers.KindDelete, Data: data}
		keys, err := handlers.Keys(ev)
		trimmed := bytes.TrimSpace(data)
		if err != nil {
			var se *handlers.ShapeError
			if !errors.As(err, &se) || se.Kind != handlers.KindDelete {
				t.Fatalf("Keys error %T %v is not a *ShapeError of the event's kind", err, err)
			}
			_ = err.Error()
			// Every array of strings and numbers, and every bare key, is
			// accepted.
			if elems, ok := keyList(trimmed); ok {
				t.Fatalf("Keys rejected %d valid keys: %v", len(elems), err)
			}
			return
		}
		elems, ok := keyList(trimmed)
		if !ok {
			t.Fatalf("Keys accepted %q, which is neither a key nor an array of keys", data)
		}
		if len(keys) != len(elems) {
			t.Fatalf("Keys gave %d keys for %d elements", len(keys), len(elems))
		}
		// Each key is the normalisation of its element.
		for i, e := range elems {
			if k := checkKey(t, e); k != keys[i] {
				t.Fatalf("key %d: Keys gave %q, NormalizeKey(%s) gives %q", i, keys[i], e, k)
			}
		}
		// The same keys sent again as JSON strings give the same Keys.
		again, err := handlers.Keys(handlers.Event{Kind: handlers.KindDelete, Data: stringKeys(keys)})
		if err != nil || !equalKeys(again, keys) {
			t.Fatalf("keys %q sent again as strings gave %q, %v", keys, again, err)
		}
	})
}

// keyList splits data into its keys: the elements of an array of JSON
// strings and numbers, or one bare string or number. ok is false for
// anything else.
func keyList(data []byte) (elems []json.RawMessage, ok bool) {
	switch testutil.JSONKind(data) {
	case "string", "number":
		return []json.RawMessage{data}, true
	case "array":
		if err := json.Unmarshal(data, &elems); err != nil {
			return nil, false
		}
		for _, e := range elems {
			if k := testutil.JSONKind(e); k != "string" && k != "number" {
				return nil, false
			}
		}
		return elems, true
	}
	return nil, false
}

func stringKeys(keys []handlers.Key) json.RawMessage {
	strs := make([]string, len(keys))
	for i, k := range keys {
		strs[i] = string(k)
	}
	b, _ := json.Marshal(strs)
	return b
}

func equalKeys(a, b []handlers.Key) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type fuzzPost struct {
	ID     int    `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  *int   `json:"views"`
}

func FuzzItems(f *testing.F) {
	deletes, others := subscriptionData()
	for _, d := range append(others, deletes...) {
		for kind := range uint8(6) {
			f.Add(kind, []byte(d))
		}
	}
	for _, s := range []string{``, `null`, `[]`, `{}`, `[{}]`, `[1]`, `"x"`, `[{"id":"1"}]`, `{"id":1.5}`, ` [ {"id":1} ] `, `[{"id":1},`} {
		f.Add(uint8(handlers.KindUpdate), []byte(s))
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		ev := handlers.Event{Kind: handlers.Kind(kind), Data: data, Collection: "posts", UID: "u"}
		_ = ev.Kind.String()
		trimmed := bytes.TrimSpace(data)
		want := -1 // number of items a successful decoding must give
		switch testutil.JSONKind(trimmed) {
		case "empty":
			want = 0
		case "object":
			want = 1
		case "array":
			var elems []json.RawMessage
			if json.Unmarshal(trimmed, &elems) == nil {
				want = len(elems)
			}
		}
		checkItems[map[string]any](t, ev, want)
		checkItems[json.RawMessage](t, ev, want)
		checkItems[fuzzPost](t, ev, want)
		checkItems[any](t, ev, want)
		checkItems[int](t, ev, want)

		keys, err := handlers.ItemKeys(ev, "id")
		if err != nil {
			checkShapeError(t, ev, err)
		} else if want < 0 || len(keys) != want {
			t.Fatalf("ItemKeys gave %d keys, want %d", len(keys), want)
		}
	})
}

// checkItems decodes ev as items of type T: any success gives want items
// (want < 0 means the data is no array, object or nothing, so it must fail);
// a decoded RawMessage or any is always accepted for a valid array/object.
func checkItems[T any](t *testing.T, ev handlers.Event, want int) {
	t.Helper()
	items, err := handlers.Items[T](ev)
	if err != nil {
		checkShapeError(t, ev, err)
		if want >= 0 && isRawOrAny[T]() {
			t.Fatalf("Items[%T] rejected %d valid elements: %v", *new(T), want, err)
		}
		return
	}
	if want < 0 || len(items) != want {
		t.Fatalf("Items[%T] gave %d items for data %q, want %d", *new(T), len(items), ev.Data, want)
	}
}

func isRawOrAny[T any]() bool {
	var p *T
	switch any(p).(type) {
	case *json.RawMessage, *any:
		return true
	}
	return false
}

func checkShapeError(t *testing.T, ev handlers.Event, err error) {
	t.Helper()
	var se *handlers.ShapeError
	if !errors.As(err, &se) {
		t.Fatalf("error %T %v is not a *ShapeError", err, err)
	}
	if se.Kind != ev.Kind {
		t.Fatalf("ShapeError.Kind = %v for a %v event", se.Kind, ev.Kind)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "directus: ") {
		t.Fatalf("unhelpful error %q", msg)
	}
}
