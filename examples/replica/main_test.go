package main

import (
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The default mode: embedded server, writer, replica, final check.
func TestEmbedded(t *testing.T) {
	var out testutil.Buffer
	err := run(t.Context(), config{Duration: 1500 * time.Millisecond, WriteEvery: 2 * time.Millisecond, Lines: 3}, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, text)
	}
	if !strings.Contains(text, `msg="replica equals the server"`) {
		t.Fatalf("no verdict in the output:\n%s", text)
	}
	// The writer made every kind of change and none failed.
	m := regexp.MustCompile(`msg="writer stopped" creates=(\d+) updates=(\d+) deletes=(\d+) failed=(\d+)`).FindStringSubmatch(text)
	if m == nil || m[1] == "0" || m[2] == "0" || m[3] == "0" || m[4] != "0" {
		t.Fatalf("writer summary %q:\n%s", m, text)
	}
	// The listener heard changes: the once-a-second summary counts them.
	if m := regexp.MustCompile(`msg=replica size=\d+ adds=[1-9]\d* updates=[1-9]\d* deletes=[1-9]`).FindString(text); m == "" {
		t.Errorf("no summary with adds, updates and deletes:\n%s", text)
	}
	// Never more than Lines change lines between two summaries.
	lines := 0
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.Contains(l, "msg=replica size="):
			lines = 0
		case strings.Contains(l, "msg=add ") || strings.Contains(l, "msg=update ") || strings.Contains(l, "msg=delete "):
			if lines++; lines > 3 {
				t.Fatalf("more than 3 change lines in a second:\n%s", text)
			}
		}
	}
}

// Against a "real" server (-url): read-only by default, so only the changes
// made by someone else show, and a write that emitted no event is caught by
// the final Reconcile.
func TestRemoteReadOnly(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	if _, err := srv.Create("posts", map[string]any{"title": "a", "status": "draft", "views": 1}); err != nil {
		t.Fatal(err)
	}
	var out testutil.Buffer
	cfg := config{URL: srv.URL(), Token: directustest.AdminToken, Duration: time.Second}
	cfg.synced = func() {
		// Someone else writes while the replica runs: one change with an
		// event, and one without (like a Flow with "emit events" off).
		if _, err := srv.Create("posts", map[string]any{"title": "b", "status": "published", "views": 2}); err != nil {
			t.Error(err)
		}
		if _, err := srv.Quiet().Update("posts", []any{"1"}, map[string]any{"title": "changed quietly"}); err != nil {
			t.Error(err)
		}
	}
	err := run(t.Context(), cfg, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, text)
	}
	if !strings.Contains(text, `msg="replica equals the server" rows=2`) {
		t.Fatalf("no verdict for 2 rows:\n%s", text)
	}
	// The quiet change was found by the final reconcile: its init is the
	// replica's one resync. (Without it the replica would lack the change
	// and the check would fail.)
	if !strings.Contains(text, `msg="replica equals the server" rows=2 events=1 resyncs=1`) {
		t.Errorf("the verdict does not count the reconcile:\n%s", text)
	}
	if strings.Contains(text, "writer") {
		t.Errorf("the writer ran without -write:\n%s", text)
	}
	if n := len(srv.Items("posts")); n != 2 {
		t.Errorf("the server has %d posts, want the 2 the test made", n)
	}
}

// Another collection of a real Directus (-collection tags, uuid keys) is
// replicated as untyped rows.
func TestRemoteOtherCollection(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	if _, err := srv.Create("tags", map[string]any{"name": "go"}, map[string]any{"name": "directus"}); err != nil {
		t.Fatal(err)
	}
	var out testutil.Buffer
	cfg := config{URL: srv.URL(), Token: directustest.AdminToken, Collection: "tags", Duration: time.Second}
	cfg.synced = func() {
		if err := srv.Delete("tags", srv.Items("tags")[0]["id"]); err != nil {
			t.Error(err)
		}
	}
	err := run(t.Context(), cfg, &out)
	if err != nil || !strings.Contains(out.String(), `msg="replica equals the server" rows=1`) {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
}

// The final check reports a replica that differs, and run's error makes main
// exit 1.
func TestCheckDiffers(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	if _, err := srv.Create("posts", map[string]any{"title": "on the server", "status": "draft", "views": 0}); err != nil {
		t.Fatal(err)
	}
	posts := testutil.Must(store.New(store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }}))
	defer posts.Close()
	// A replica that holds something else: applied by hand, no subscription.
	_ = posts.Handle(handlers.Event{Kind: handlers.KindInit, Data: []byte(`[{"id":1,"title":"stale","status":"draft","views":0},{"id":9,"title":"gone"}]`)})

	var out testutil.Buffer
	r := &replicator{cfg: config{Collection: "posts"}, log: slog.New(slog.NewTextHandler(&out, nil)), srv: srv}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := check(ctx, r, posts, func(p Post) int64 { return p.ID })
	if !errors.Is(err, errDiffers) {
		t.Fatalf("check = %v, want errDiffers", err)
	}
	if !strings.Contains(out.String(), `msg="replica differs from the server" rows=2 server_rows=1 missing=0 extra=1 changed=1`) {
		t.Fatalf("output:\n%s", out.String())
	}
}

func TestCompare(t *testing.T) {
	have := map[int64]Post{1: {ID: 1, Title: "a"}, 2: {ID: 2}, 3: {ID: 3}}
	want := map[int64]Post{1: {ID: 1, Title: "b"}, 2: {ID: 2}, 4: {ID: 4}}
	if d := compare(have, want); d != (diff{missing: 1, extra: 1, changed: 1}) {
		t.Fatalf("compare = %+v", d)
	}
	if !compare(want, want).equal() {
		t.Fatal("a map differs from itself")
	}
}

// Every example builds (go build ./examples/...).
func TestBuildExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the examples with the go command")
	}
	// go test puts its own go command first in PATH. The binaries go to a
	// temporary directory (with a single match, go build would write one
	// into the working directory).
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", t.TempDir(), "./examples/...")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/...: %v\n%s", err, out)
	}
}
