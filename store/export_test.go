package store

import (
	"time"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/internal/filter"
)

// SetViewCushion sets the cushion of the views made after it, and returns
// a function that restores it.
func SetViewCushion(n int) (restore func()) {
	old := cushion.Swap(int64(n))
	return func() { cushion.Store(old) }
}

// ExitWatch returns the handler of the companion subscription of a replica
// filtered by f, to drive it with events of chosen Received times.
func ExitWatch[K comparable, T any](c *Collection[K, T], f map[string]any) (Handler interface {
	Handle(handlers.Event) error
}) {
	flt, err := filter.Parse(f)
	if err != nil {
		panic(err)
	}
	c.lock()
	c.seen = make(map[K]time.Time)
	c.tombs = make(map[K]time.Time)
	c.unlock()
	return &exitWatch[K, T]{c: c, f: flt}
}
