package store

import (
	"context"

	"github.com/e41af43e/directus-realtime/handlers"
)

// Source feeds a Collection from something other than its own Directus
// subscription: for example relay.Source, which follows the JetStream
// bucket a relay mirrors a collection into, so that a fleet of processes
// shares one Directus subscription.
//
// A Source speaks the vocabulary of subscription events, so that a
// Collection fed by one keeps the contract of the package documentation
// (reads, indexes, listeners, Stats, WaitSynced):
//
//   - an init (handlers.KindInit with an array of rows) replaces the rows
//     with exactly those, in one step; the first one marks the Collection
//     synced, later ones (Resync set) are a full reload whose differences
//     the listeners hear, marked Resync;
//   - a create or update upserts the rows of its data (an object or an
//     array);
//   - a delete removes the keys of its data.
//
// Run delivers events to h one at a time, from one goroutine, in the
// order they must be applied, until ctx ends (it then returns ctx's error)
// or it meets an error it cannot recover from.
type Source interface {
	Run(ctx context.Context, h handlers.Handler) error
}

// Follow applies the events of src to the collection until ctx ends, the
// collection is closed or src fails, and returns src's error (ctx's error
// when ctx ended; ErrClosed when the collection was closed: Follow notices
// a Close at src's next event, and cancels src's context then). Errors of
// single events (rows that do not decode) are counted in Stats and logged,
// as for a subscription, and do not stop Follow.
//
// A Collection follows one thing at a time: a Source or a subscription.
func (c *Collection[K, T]) Follow(ctx context.Context, src Source) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := src.Run(ctx, handlers.HandlerFunc(func(ev handlers.Event) error {
		if c.isClosed() {
			cancel()
			return ErrClosed
		}
		if err := c.Handle(ev); err != nil {
			c.log.Warn("source event not fully applied", "kind", ev.Kind, "err", err)
		}
		return nil
	}))
	if c.isClosed() {
		return ErrClosed
	}
	return err
}
