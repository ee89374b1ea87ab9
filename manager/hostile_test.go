package manager_test

// Regression tests for user code that misbehaves (handlers that panic,
// block, or call Close) and for retry paths that must back off. Each would
// have failed on the code before the fix it guards.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// TestCloseFromAHandler: Close called from inside a handler returns and
// closes everything (the handler's own goroutine ends when it returns).
func TestCloseFromAHandler(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	closed := make(chan error, 1)
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true}), handlers.HandlerFunc(func(ev handlers.Event) error {
		if ev.Kind == handlers.KindCreate {
			closed <- e.m.Close()
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close from a handler hangs")
	}
	if e.m.State() != conn.StateClosed {
		t.Fatalf("state %v", e.m.State())
	}
}

// TestCloseIsBoundedByABlockedHandler: a handler that never returns holds
// Close for CloseTimeout, not for ever, and Close says so.
func TestCloseIsBoundedByABlockedHandler(t *testing.T) {
	e := setup(t, &manager.Options{CloseTimeout: 200 * time.Millisecond}, conn.Auth{})
	release := make(chan struct{})
	defer close(release)
	blocked := make(chan struct{})
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true}), handlers.HandlerFunc(func(ev handlers.Event) error {
		if ev.Kind == handlers.KindCreate {
			close(blocked)
			<-release
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	<-blocked
	start := time.Now()
	err := e.m.Close()
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v", took)
	}
	if !errors.Is(err, manager.ErrCloseTimeout) {
		t.Fatalf("Close: %v, want ErrCloseTimeout", err)
	}
}

// TestHandlerPanicIsRecoveredAndResynced: a handler that panics is reported
// as a *protocol.PanicError with its stack, the process survives, and the
// handler gets a fresh init; one that panics on every init is resynced on
// the backoff's schedule, not in a loop.
func TestHandlerPanicIsRecoveredAndResynced(t *testing.T) {
	e := setup(t, &manager.Options{Retry: conn.Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: -1}}, conn.Auth{})
	var inits atomic.Int64
	got := make(chan handlers.Event, 64)
	sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true}), handlers.HandlerFunc(func(ev handlers.Event) error {
		got <- ev
		if ev.Kind == handlers.KindCreate {
			panic("boom on create")
		}
		if ev.Kind == handlers.KindInit && inits.Add(1) > 1 {
			panic("boom on every resync")
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	<-got
	if _, err := e.srv.Create("posts", map[string]any{"title": "x"}); err != nil {
		t.Fatal(err)
	}
	var pe *protocol.PanicError
	for err := range e.errs {
		if errors.As(err, &pe) {
			break
		}
	}
	if pe.Value != "boom on create" || !strings.Contains(string(pe.Stack), "hostile_test.go") {
		t.Fatalf("panic %v, stack %q", pe.Value, pe.Stack)
	}
	// The resync init follows, and panics too: from then on a read per
	// backoff step (100, 200, 400, 800 ms: 4 to 5 in 2 s), not a loop.
	reads := e.wire.count("items")
	cpu := testutil.CPUTime()
	window := time.NewTimer(2 * time.Second)
	<-window.C
	n := e.wire.count("items") - reads
	if n < 2 || n > 5 {
		t.Fatalf("%d resync reads in 2 s, want the backoff's 2 to 5", n)
	}
	if used := testutil.CPUTime() - cpu; used > time.Second {
		t.Fatalf("%v of CPU in 2 s", used)
	}
	if st := sub.Stats(); st.Panics < 2 || st.ResyncsByCause[manager.CausePanic] == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCrashOnPanic: with CrashOnPanic a handler's panic is not recovered.
// The test runs itself in a child process, which must die of the panic.
func TestCrashOnPanic(t *testing.T) {
	if os.Getenv("MANAGER_CRASH_CHILD") == "1" {
		e := setup(t, &manager.Options{CrashOnPanic: true}, conn.Auth{})
		if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true}), handlers.HandlerFunc(func(ev handlers.Event) error {
			panic("crash as asked")
		})); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second) // the panic ends the process first
		t.Fatal("still alive")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashOnPanic$")
	cmd.Env = append(os.Environ(), "MANAGER_CRASH_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "panic: crash as asked") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestNilHandlersAreRefused: a nil handler, typed or not, is a ConfigError.
func TestNilHandlersAreRefused(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	var f handlers.HandlerFunc
	var fs *handlers.Funcs
	for _, h := range []handlers.Handler{nil, f, fs} {
		var ce *protocol.ConfigError
		if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{}), h); !errors.As(err, &ce) {
			t.Errorf("%T: %v", h, err)
		}
	}
}

// TestABlockedHandlerIsReportedAndCostsNoResyncs: a handler that stops
// returning while events flood in makes its subscription stalled, is
// reported once, sends nothing to the server while it is stuck, and gets a
// resync init with the final rows once it returns.
func TestABlockedHandlerIsReportedAndCostsNoResyncs(t *testing.T) {
	e := setup(t, &manager.Options{QueueSize: 4, OverflowWait: -1}, conn.Auth{})
	release := make(chan struct{})
	stuck := make(chan struct{}, 1)
	stuckAt := make(chan struct{})
	got := make(chan handlers.Event, 1024)
	sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true, Query: &protocol.Query{Limit: -1}}), handlers.HandlerFunc(func(ev handlers.Event) error {
		if ev.Kind == handlers.KindCreate {
			select {
			case stuck <- struct{}{}:
				close(stuckAt)
				<-release
			default:
			}
		}
		got <- ev
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	<-got
	before := e.wire.count("subscribe") + e.wire.count("items")
	// The handler takes the first create and stays on it.
	if _, err := e.srv.Create("posts", map[string]any{"title": "first"}); err != nil {
		t.Fatal(err)
	}
	<-stuckAt
	for i := 1; i < 200; i++ {
		if _, err := e.srv.Create("posts", map[string]any{"title": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.m.Conn().Ping(ctx(t)); err != nil { // every event routed
		t.Fatal(err)
	}
	if st := sub.State(); st != manager.StateStalled {
		t.Fatalf("state %v while the handler is stuck", st)
	}
	stalls := 0
	for len(e.errs) > 0 {
		if errors.Is(<-e.errs, manager.ErrHandlerStalled) {
			stalls++
		}
	}
	if stalls != 1 {
		t.Fatalf("%d stall reports, want 1", stalls)
	}
	if n := e.wire.count("subscribe") + e.wire.count("items") - before; n != 0 {
		t.Fatalf("%d frames to the server while the handler is stuck", n)
	}
	close(release)
	for ev := range got {
		if ev.Kind == handlers.KindInit {
			rows, _ := handlers.Items[map[string]any](ev)
			if !ev.Resync || len(rows) != 200 {
				t.Fatalf("resync %v with %d rows", ev.Resync, len(rows))
			}
			break
		}
	}
	if st := sub.Stats(); st.Overflows != 1 || st.ResyncsByCause[manager.CauseOverflow] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSmallMistakesGetClearErrors: a huge duplicate uid does not make a huge
// error; nil, a string and a typeless object are refused by SendMessage
// with what is wrong; a uid reused with other options is a conflict.
func TestSmallMistakesGetClearErrors(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	big := strings.Repeat("u", 4<<20)
	if _, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: big, Persistent: true}), newRecorder()); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{UID: big, Persistent: true}), newRecorder())
	if !errors.Is(err, manager.ErrDuplicate) || len(err.Error()) > 1024 {
		t.Fatalf("duplicate: %d-byte error", len(err.Error()))
	}
	_, err = e.m.Subscribe(ctx(t), manager.SubscribeOptions{Collection: "posts", UID: big, Query: &protocol.Query{Fields: []string{"id"}}}, newRecorder())
	var de *manager.DuplicateError
	if !errors.Is(err, manager.ErrConflict) || !errors.As(err, &de) || de.Conflict != "query" {
		t.Fatalf("other query, same uid: %v", err)
	}
	for _, c := range []struct {
		msg  any
		want string
	}{{nil, "null"}, {"hello", "a string"}, {map[string]any{"uid": 1}, "no \"type\""}, {map[string]any{"type": 7}, "not a string"}} {
		var ce *protocol.ConfigError
		err := e.m.SendMessage(ctx(t), c.msg)
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SendMessage(%#v): %v, want an error saying %q", c.msg, err, c.want)
		}
	}
}
