package manager_test

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
)

func TestFlushWaitsForTheHandler(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	release := make(chan struct{})
	var handled atomic.Int64
	sub, err := e.m.Subscribe(ctx(t), posts(manager.SubscribeOptions{Persistent: true}), handlers.HandlerFunc(func(ev handlers.Event) error {
		<-release
		handled.Add(1)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	// Subscribe returned when the init arrived; the handler is still held.
	if handled.Load() != 0 {
		t.Fatal("handler ran before release")
	}
	flushed := make(chan error)
	go func() { flushed <- sub.Flush(ctx(t)) }()
	select {
	case <-flushed:
		t.Fatal("Flush returned before the handler handled the init")
	default:
	}
	close(release)
	if err := <-flushed; err != nil || handled.Load() != 1 {
		t.Fatalf("Flush: %v, handled %d", err, handled.Load())
	}
	// Info encodes states by name.
	b, err := json.Marshal(e.m.ActiveSubscriptions())
	if err != nil || !strings.Contains(string(b), `"State":"active"`) {
		t.Fatalf("%s %v", b, err)
	}
}
