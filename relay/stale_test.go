package relay_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/e41af43e/directus-realtime/internal/faultproxy"
	"github.com/e41af43e/directus-realtime/relay"
)

// TestNoStaleRowOverANewerOneAfterHandOver: the standby's link to Directus
// stalls, so its replica falls behind while the leader writes newer rows;
// the leader dies and the standby wins the lease with a stale replica. It
// must not write its stale rows: it re-reads Directus before writing, and
// the bucket never sees a row go back to an older version.
func TestNoStaleRowOverANewerOneAfterHandOver(t *testing.T) {
	e := newEnv(t)
	for range 10 {
		if _, err := e.srv.Create("posts", map[string]any{"title": "p", "status": "draft", "views": 0}); err != nil {
			t.Fatal(err)
		}
	}
	proxy, err := faultproxy.New(strings.TrimPrefix(e.srv.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	a := e.startRelay("a", nil)
	waitLeading(t, a)
	b := e.startRelayAt("b", proxy.URL("http"), nil)
	waitReady(t, b)
	obs := e.observe()
	p := e.startPod(nil, 0)
	e.waitEqual("pod", p.posts)

	proxy.Stall(true)
	for v := 1; v <= 5; v++ {
		for id := int64(1); id <= 10; id++ {
			if _, err := e.srv.Update("posts", []any{id}, map[string]any{"views": v}); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.waitEqual("pod, from the leader", p.posts)
	if row, _ := b.Replica("posts").Get("1"); !strings.Contains(string(row), `"views":0`) {
		t.Fatalf("the standby's replica is not stale (%s): the test proves nothing", row)
	}

	obs.waitFor(t, "the leader's last writes", func() bool {
		for id := 1; id <= 10; id++ {
			if obs.views[strconv.Itoa(id)] != 5 {
				return false
			}
		}
		return true
	})
	written := obs.count()
	a.kill()
	waitLease(t, e, "b") // b holds the lease with a stale replica
	proxy.Stall(false)
	waitLeading(t, b)
	e.waitEqual("pod, after the hand-over", p.posts)
	obs.check(t)
	if n := obs.count(); n != written {
		// b found the bucket equal to its fresh replica: nothing to write.
		obs.mu.Lock()
		t.Errorf("the new leader wrote %d rows into a bucket that was up to date: %q", n-written, obs.writes[written:])
		obs.mu.Unlock()
	}
}

// waitLease waits until the lease names id.
func waitLease(t *testing.T, e *env, id string) {
	t.Helper()
	nc, js := e.jetstream()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, relay.DefaultLeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, relay.LeaseKey)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for {
		select {
		case ent := <-w.Updates():
			if ent == nil || ent.Operation() != jetstream.KeyValuePut {
				continue
			}
			var v struct{ ID string }
			if json.Unmarshal(ent.Value(), &v) == nil && v.ID == id {
				return
			}
		case <-ctx.Done():
			t.Fatalf("the lease never named %s", id)
		}
	}
}

// TestLateWriteOfAFormerLeaderIsCorrected: a write the leader did not make
// (a former leader that was paused past its lease and woke up) is checked
// against the leader's replica and undone.
func TestLateWriteOfAFormerLeaderIsCorrected(t *testing.T) {
	e := newEnv(t)
	if _, err := e.srv.Create("posts", map[string]any{"title": "fresh", "status": "draft", "views": 7}); err != nil {
		t.Fatal(err)
	}
	r := e.startRelay("a", nil)
	waitReady(t, r)
	p := e.startPod(nil, 0)
	e.waitEqual("pod", p.posts)
	nc, js := e.jetstream()
	defer nc.Close()
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	staleRev, err := kv.Put(context.Background(), "1", []byte(`{"id":1,"title":"stale","status":"draft","views":3}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The key's next entry is the leader's correction.
	w, err := kv.Watch(ctx, "1", jetstream.ResumeFromRevision(staleRev+1))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for {
		select {
		case ent := <-w.Updates():
			if ent == nil {
				continue
			}
			if !strings.Contains(string(ent.Value()), `"fresh"`) {
				t.Fatalf("the entry after the foreign write is %s, want the leader's row", ent.Value())
			}
			e.waitEqual("pod after the correction", p.posts)
			return
		case <-ctx.Done():
			t.Fatal("the leader never corrected the foreign write")
		}
	}
}
