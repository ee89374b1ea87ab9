package store_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/store"
)

// An init whose data holds no decodable row (not an array, or only bad
// rows) is reported and skipped: it must not empty the replica. The soak
// test found replicas emptied by such a frame until their next resync.
func TestMalformedInitKeepsTheRows(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	apply(t, c, ev(handlers.KindInit, `[{"id":1,"title":"a"},{"id":2,"title":"b"}]`))
	for i, bad := range []string{`42`, `"x"`, `true`, `[1,2,3]`, `[{"id":"not a number"}]`} {
		e := ev(handlers.KindInit, bad)
		e.Resync = true
		err := c.Handle(e)
		var se *handlers.ShapeError
		if !errors.As(err, &se) {
			t.Errorf("init %s: err = %v, want a *handlers.ShapeError", bad, err)
		}
		if fmt.Sprint(ids(c)) != "[1 2]" {
			t.Fatalf("init %s emptied or changed the replica: %v", bad, ids(c))
		}
		if got := c.Stats().BadRows; got < uint64(i+1) {
			t.Errorf("init %s: BadRows = %d", bad, got)
		}
	}
	// A real init still replaces, an empty one included.
	apply(t, c, ev(handlers.KindInit, `[{"id":3}]`))
	if fmt.Sprint(ids(c)) != "[3]" {
		t.Fatalf("rows %v after a valid init", ids(c))
	}
	apply(t, c, ev(handlers.KindInit, `[]`))
	if c.Len() != 0 {
		t.Fatalf("rows %v after an empty init", ids(c))
	}
}
