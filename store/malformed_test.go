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
// test found replicas emptied by such a frame until their next resync. It is
// reported once per episode (the first such init returns the error, the
// next ones nil), and the replica's Status says it is failing until an init
// decodes again.
func TestMalformedInitKeepsTheRows(t *testing.T) {
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	apply(t, c, ev(handlers.KindInit, `[{"id":1,"title":"a"},{"id":2,"title":"b"}]`))
	for i, bad := range []string{`42`, `"x"`, `true`, `[1,2,3]`, `[{"id":"not a number"}]`} {
		e := ev(handlers.KindInit, bad)
		e.Resync = true
		err := c.Handle(e)
		var se *handlers.ShapeError
		switch {
		case i == 0 && (!errors.As(err, &se) || !errors.Is(err, store.ErrUndecodable)):
			t.Errorf("init %s: err = %v, want a *handlers.ShapeError matching ErrUndecodable", bad, err)
		case i > 0 && err != nil:
			t.Errorf("init %s: err = %v, want nil: the episode was reported", bad, err)
		}
		if st := c.Status(); !errors.Is(st.Err, store.ErrUndecodable) {
			t.Errorf("init %s: status %+v, want failing with ErrUndecodable", bad, st)
		}
		if fmt.Sprint(ids(c)) != "[1 2]" {
			t.Fatalf("init %s emptied or changed the replica: %v", bad, ids(c))
		}
		if got := c.Stats().BadRows; got < uint64(i+1) {
			t.Errorf("init %s: BadRows = %d", bad, got)
		}
	}
	// A real init still replaces, an empty one included, and ends the
	// episode.
	apply(t, c, ev(handlers.KindInit, `[{"id":3}]`))
	if st := c.Status(); st.Err != nil {
		t.Fatalf("status %+v after a valid init", st)
	}
	if fmt.Sprint(ids(c)) != "[3]" {
		t.Fatalf("rows %v after a valid init", ids(c))
	}
	apply(t, c, ev(handlers.KindInit, `[]`))
	if c.Len() != 0 {
		t.Fatalf("rows %v after an empty init", ids(c))
	}
}
