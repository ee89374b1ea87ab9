package handlers

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type post struct {
	ID     int    `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
}

func ev(kind Kind, data string) Event {
	e := Event{Kind: kind, Collection: "posts", UID: "u"}
	if data != "" {
		e.Data = json.RawMessage(data)
	}
	return e
}

func TestItemsShapes(t *testing.T) {
	// Frames from transcript.txt: R1 (array), S6 (single-item init object), S3 (no data).
	got, err := Items[post](ev(KindCreate, `[{"id":1521,"title":"first","status":"published","views":1}]`))
	if err != nil || !reflect.DeepEqual(got, []post{{1521, "first", "published"}}) {
		t.Fatalf("array: %v %v", got, err)
	}
	got, err = Items[post](ev(KindInit, `{"id":1522,"title":"second","status":"draft","views":2}`))
	if err != nil || len(got) != 1 || got[0].ID != 1522 {
		t.Fatalf("object: %v %v", got, err)
	}
	got, err = Items[post](ev(KindInit, ""))
	if err != nil || got != nil {
		t.Fatalf("no data: %v %v", got, err)
	}
	for _, bad := range []string{`"1522"`, `12`, `[1,2]`, `{"id":"not a number"}`, `nul`} {
		var se *ShapeError
		if _, err := Items[post](ev(KindUpdate, bad)); !errors.As(err, &se) {
			t.Errorf("%s: err = %v, want *ShapeError", bad, err)
		}
	}
}

func TestKeysNormalised(t *testing.T) {
	cases := map[string][]Key{
		`["1521"]`:              {"1521"},                 // R8: key from a URL path
		`[1523,1524,1525]`:      {"1523", "1524", "1525"}, // R9: keys from a JSON body
		`"1522"`:                {"1522"},                 // R10: single-item subscription
		`1530`:                  {"1530"},                 // bare number
		`["7103850d-ae97-4c"]`:  {"7103850d-ae97-4c"},     // uuid keys
		`[1.0, 2e3, -4, "x"]`:   {"1", "2000", "-4", "x"}, // number spellings
		`[1.5]`:                 {"1.5"},                  // non-integral numbers keep their text
		`[12345678901234567]`:   {"12345678901234567"},    // beyond float precision
		`["a\"b"]`:              {`a"b`},                  // escapes
		`[]`:                    {},                       // empty
		` [ 1 , "1" ] `:         {"1", "1"},               // whitespace
		`[9223372036854775807]`: {"9223372036854775807"},
	}
	for data, want := range cases {
		got, err := Keys(ev(KindDelete, data))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %q, %v; want %q", data, got, err, want)
		}
	}
	for _, bad := range []string{``, `{"id":1}`, `[{"id":1}]`, `[true]`, `[null]`, `[`, `true`} {
		if _, err := Keys(ev(KindDelete, bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestKeyOf(t *testing.T) {
	for v, want := range map[any]Key{"1521": "1521", 1521: "1521", int64(-3): "-3", uint(7): "7", 2.0: "2", json.Number("10"): "10"} {
		if got, err := KeyOf(v); err != nil || got != want {
			t.Errorf("%v: %q %v", v, got, err)
		}
	}
	if _, err := KeyOf(struct{}{}); err == nil {
		t.Error("struct accepted")
	}
}

func TestTypedFuncsAndChain(t *testing.T) {
	var log []string
	typed := Typed[post]{
		OnInit:   func(e Event, items []post) error { log = append(log, "init"); return nil },
		OnCreate: func(e Event, items []post) error { log = append(log, "create:"+items[0].Title); return nil },
		OnDelete: func(e Event, keys []Key) error { log = append(log, "delete:"+string(keys[0])); return nil },
		OnError:  func(e Event) error { log = append(log, "error"); return nil },
	}
	raw := Funcs{OnUpdate: func(e Event) error { log = append(log, "raw-update"); return errors.New("boom") }}
	h := Chain(typed, raw, Only(HandlerFunc(func(e Event) error { log = append(log, "only-delete"); return nil }), KindDelete))
	for _, e := range []Event{
		ev(KindInit, `[]`),
		ev(KindCreate, `[{"id":1,"title":"a"}]`),
		ev(KindUpdate, `[{"id":1,"title":"b"}]`),
		ev(KindDelete, `["1"]`),
		{Kind: KindError, Err: errors.New("FORBIDDEN")},
	} {
		err := h.Handle(e)
		if (e.Kind == KindUpdate) != (err != nil) {
			t.Errorf("%s: err = %v", e.Kind, err)
		}
	}
	want := []string{"init", "create:a", "raw-update", "delete:1", "only-delete", "error"}
	if !reflect.DeepEqual(log, want) {
		t.Errorf("calls = %q, want %q", log, want)
	}
	if err := typed.Handle(ev(KindCreate, `"oops"`)); err == nil {
		t.Error("bad create data accepted")
	}
}

func TestInvalidate(t *testing.T) {
	var got []Invalidation
	h := Invalidate("", func(inv Invalidation) { got = append(got, inv) })
	_ = h.Handle(ev(KindCreate, `[{"id":1521,"title":"x"}]`))
	_ = h.Handle(ev(KindUpdate, `[{"id":1},{"id":2}]`))
	_ = h.Handle(ev(KindDelete, `["1521", 7]`))
	_ = h.Handle(Event{Kind: KindInit, Resync: true})
	if err := h.Handle(ev(KindUpdate, `[{"title":"no key"}]`)); err == nil {
		t.Error("items without key field: no error")
	}
	want := []Invalidation{
		{Kind: KindCreate, Collection: "posts", Keys: []Key{"1521"}},
		{Kind: KindUpdate, Collection: "posts", Keys: []Key{"1", "2"}},
		{Kind: KindDelete, Collection: "posts", Keys: []Key{"1521", "7"}},
		{Kind: KindInit, All: true},
		{Kind: KindUpdate, Collection: "posts", All: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}
