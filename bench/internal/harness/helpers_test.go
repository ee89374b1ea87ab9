package harness

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/directustest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestWorkloadReplicas runs a small workload live against directustest with
// both Go clients and the recorder connected, then replays the recording to
// both clients: every replica must equal the model, and the model the
// server. It is the check that the benchmarks and tools measure correct
// clients.
func TestWorkloadReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := directustest.NewServer(nil)
	defer srv.Close()
	w := NewWorkload(7, 300, 400)
	wr := DirectWriter{Srv: srv}
	model, err := w.SeedInit(ctx, wr)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := StartRecorder(ctx, srv.URL(), directustest.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*Marks{}
	var live []Client
	for _, kind := range []string{"lib", "minimal"} {
		marks := NewMarks(w.Events)
		c, _ := NewGoClient(kind, marks)
		if err := c.Start(ctx, srv.URL(), directustest.AdminToken); err != nil {
			t.Fatal(kind, err)
		}
		defer c.Close()
		clients[kind] = marks
		live = append(live, c)
	}
	run, err := w.Run(ctx, wr, model, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.WriteStart) != w.Events {
		t.Fatalf("%d writes recorded, want %d", len(run.WriteStart), w.Events)
	}
	server, _ := wr.Rows(ctx)
	if d := Compare(server, model.Rows); !d.OK() {
		t.Fatalf("model vs server: %s", d)
	}
	for i, kind := range []string{"lib", "minimal"} {
		if err := clients[kind].WaitCount(ctx, w.Events, 5*time.Second); err != nil {
			t.Fatalf("%s: %d of %d events: %v", kind, clients[kind].Count(), w.Events, err)
		}
		if d := Compare(live[i].Rows(), model.Rows); !d.OK() {
			t.Errorf("live %s: %s", kind, d)
		}
	}
	if err := rec.WaitCount(ctx, w.Events); err != nil {
		t.Fatal(err)
	}
	recording := rec.Stop()
	if len(recording.Events) != w.Events {
		t.Fatalf("recorded %d frames, want %d", len(recording.Events), w.Events)
	}

	rs, err := NewReplayServer(recording)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for _, kind := range []string{"lib", "minimal"} {
		marks := NewMarks(w.Events)
		c, _ := NewGoClient(kind, marks)
		if err := c.Start(ctx, rs.URL(), "any"); err != nil {
			t.Fatal(kind, err)
		}
		if err := marks.WaitCount(ctx, w.Events, 5*time.Second); err != nil {
			t.Fatalf("replay %s: %d of %d events: %v", kind, marks.Count(), w.Events, err)
		}
		if d := Compare(c.Rows(), model.Rows); !d.OK() {
			t.Errorf("replay %s: %s", kind, d)
		}
		_ = c.Close()
	}
}

func TestSummarize(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond
	}
	d := Summarize(ds)
	if d.P50 != 50*time.Millisecond || d.P90 != 90*time.Millisecond || d.P99 != 99*time.Millisecond || d.Max != 100*time.Millisecond {
		t.Fatalf("%+v", d)
	}
}

// TestRESTWriter runs a small workload through the REST writer, the one the
// load tool and the comparison use against a real Directus, here against
// directustest's REST API: the server's rows must equal the model.
func TestRESTWriter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := directustest.NewServer(nil)
	defer srv.Close()
	wr := RESTWriter{URL: srv.URL(), Token: directustest.AdminToken}
	w := NewWorkload(3, 50, 200)
	model, err := w.SeedInit(ctx, wr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Run(ctx, wr, model, 0); err != nil {
		t.Fatal(err)
	}
	rows, err := wr.Rows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(rows, model.Rows); !d.OK() {
		t.Fatalf("server after the REST writes: %s", d)
	}
	if len(rows) == 0 {
		t.Fatal("no rows")
	}
}
