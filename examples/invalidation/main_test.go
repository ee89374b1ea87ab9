package main

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The whole example on the embedded server: the walkthrough's reads are a
// miss, a hit, then after the write's event a miss with the new value; the
// concurrent phase has hits, misses and no stale read.
func TestRun(t *testing.T) {
	var out testutil.Buffer
	err := run(t.Context(), config{Duration: time.Second, Readers: 3}, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, text)
	}
	steps := []string{
		`msg="first read" id=1 result=miss title="first version"`,
		`msg="second read" id=1 result=hit title="first version"`,
		`msg=wrote id=1 title="second version"`,
		`msg="invalidated by the update event" id=1`,
		`msg="read after the event" id=1 result=miss title="second version"`,
		`msg="read again" id=1 result=hit title="second version"`,
		`msg="invalidated by the delete event" id=1`,
		`msg="read after the delete" id=1 result=gone`,
	}
	at := 0
	for _, step := range steps {
		i := strings.Index(text[at:], step)
		if i < 0 {
			t.Fatalf("missing or out of order: %s\n%s", step, text)
		}
		at += i + len(step)
	}
	m := regexp.MustCompile(`msg=cache reads=(\d+) hits=(\d+) misses=(\d+) writes=(\d+) invalidations=(\d+) stale_reads=(\d+)`).FindStringSubmatch(text)
	if m == nil || m[2] == "0" || m[3] == "0" || m[4] == "0" || m[6] != "0" {
		t.Fatalf("cache summary %q:\n%s", m, text)
	}
	if !strings.Contains(text[at:], `msg="ok: no read after an invalidation saw an older value"`) {
		t.Fatalf("no final ok line:\n%s", text)
	}
	if strings.Contains(text, "result=error") {
		t.Fatalf("an expected answer is logged as an error:\n%s", text)
	}
}

// Against a "real" server (-url), the example cleans up after itself.
func TestRemoteCleansUp(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	var out testutil.Buffer
	err := run(t.Context(), config{URL: srv.URL(), Token: directustest.AdminToken, Duration: 200 * time.Millisecond}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if rows := srv.Items("posts"); len(rows) != 0 {
		t.Fatalf("left %d posts behind", len(rows))
	}
}

// The race the generations guard against, step by step: a read is in
// flight when the invalidation of its key arrives. Its (possibly stale)
// result is returned to its caller, who asked before the event, but not
// cached: the next read is a miss that reads the server again.
func TestInvalidationDuringRead(t *testing.T) {
	inFlight := make(chan struct{})
	release := make(chan Post)
	server := Post{ID: 1, Title: "new"}
	var mu sync.Mutex
	fetches := 0
	c := newCache(func(ctx context.Context, k handlers.Key) (Post, error) {
		mu.Lock()
		fetches++
		n := fetches
		mu.Unlock()
		if n == 1 {
			close(inFlight)
			return <-release, nil
		}
		return server, nil
	})
	key := handlers.Key("1")

	got := make(chan Post)
	go func() {
		p, _, _ := c.Get(context.Background(), key)
		got <- p
	}()
	<-inFlight
	gen := c.Generation(key)
	// The update event arrives while the first read is in flight...
	c.invalidate(handlers.Invalidation{Kind: handlers.KindUpdate, Collection: "posts", Keys: []handlers.Key{"1"}})
	if err := c.WaitInvalidated(context.Background(), key, gen); err != nil {
		t.Fatal(err)
	}
	// ...and the read then returns what it read before the write.
	release <- Post{ID: 1, Title: "old"}
	if p := <-got; p.Title != "old" {
		t.Fatalf("in-flight read returned %q", p.Title)
	}
	p, hit, err := c.Get(context.Background(), key)
	if err != nil || hit || p.Title != "new" {
		t.Fatalf("read after the invalidation: %+v hit=%v err=%v, want a miss reading \"new\"", p, hit, err)
	}
	if p, hit, _ := c.Get(context.Background(), key); !hit || p.Title != "new" {
		t.Fatalf("third read: %+v hit=%v, want a hit", p, hit)
	}
}

// An init (the first one, or a resync after a reconnect) drops everything,
// and the keys of a delete sent as strings match rows keyed by numbers.
func TestInvalidateHandler(t *testing.T) {
	c := newCache(func(ctx context.Context, k handlers.Key) (Post, error) { return Post{Title: string(k)}, nil })
	for _, k := range []handlers.Key{"1", "2", "3"} {
		if _, _, err := c.Get(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	h := handlers.Invalidate("id", c.invalidate)
	_ = h.Handle(handlers.Event{Kind: handlers.KindDelete, Collection: "posts", Data: []byte(`["2"]`)})
	_ = h.Handle(handlers.Event{Kind: handlers.KindUpdate, Collection: "posts", Data: []byte(`[{"id":3}]`)})
	if _, hit, _ := c.Get(context.Background(), "1"); !hit {
		t.Fatal("1 was dropped")
	}
	for _, k := range []handlers.Key{"2", "3"} {
		if _, hit, _ := c.Get(context.Background(), k); hit {
			t.Fatalf("%s was not dropped", k)
		}
	}
	gen := c.Generation("1")
	_ = h.Handle(handlers.Event{Kind: handlers.KindInit, Resync: true, Collection: "posts", Data: []byte(`[]`)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.WaitInvalidated(ctx, "1", gen); err != nil {
		t.Fatal(err)
	}
	if _, hit, _ := c.Get(context.Background(), "1"); hit {
		t.Fatal("a resync init did not drop 1")
	}
	if st := c.Stats(); st.Invalidations != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// WaitInvalidated gives up with its context.
func TestWaitInvalidatedTimeout(t *testing.T) {
	c := newCache(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.WaitInvalidated(ctx, "1", c.Generation("1")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}
