package manager

import (
	"context"
	"iter"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Events subscribes as Subscribe does and returns the subscription's events
// as a sequence to range over, the Go form of the JS SDK's
// `for await (const message of subscription)`:
//
//	for ev, err := range m.Events(ctx, opts) {
//		if err != nil {
//			return err // why the stream ended
//		}
//		// ev.Kind is KindInit (ev.Resync after a reconnect or an overflow),
//		// KindCreate, KindUpdate, KindDelete or KindError.
//	}
//
// The subscription lasts as long as the loop: breaking out of it, or ctx
// being done, ends it and unsubscribes it from the server (when no other
// local subscription shares it) before the loop returns. It subscribes
// when the loop starts, not when Events is called; each range over the
// sequence is a subscription of its own.
//
// Every pair has either an event or an error. A KindError event (the
// server refused one event, the stream goes on) comes with a nil error. A
// non-nil error is the last pair and says why the stream ended: the
// subscribe failed (as Subscribe's error), the subscription ended (its Err,
// e.g. ErrClosed when the Manager closed) or ctx is done (ctx.Err()).
//
// The loop body is the subscription's handler: events wait for it in the
// subscription's bounded queue, and a body that falls behind its queue
// gets a fresh init marked Resync in place of what was discarded, as a
// handler does (SubscriptionState and Stats tell of it). opts.Persistent
// is refused with a *protocol.ConfigError, since the loop scopes the
// subscription.
func (m *Manager) Events(ctx context.Context, opts SubscribeOptions) iter.Seq2[handlers.Event, error] {
	return func(yield func(handlers.Event, error) bool) {
		if opts.Persistent {
			yield(handlers.Event{}, &protocol.ConfigError{Field: "Persistent", Reason: "an Events loop scopes its subscription; use Subscribe for a persistent one"})
			return
		}
		loop, stop := context.WithCancel(ctx)
		defer stop()
		// Unbuffered: the subscription's own queue does the buffering and
		// its overflow rule applies, as for any handler.
		events := make(chan handlers.Event)
		h := handlers.HandlerFunc(func(ev handlers.Event) error {
			select {
			case events <- ev:
			case <-loop.Done():
			}
			return nil
		})
		sub, err := m.Subscribe(loop, opts, h)
		if err != nil {
			yield(handlers.Event{}, err)
			return
		}
		defer func() { _ = sub.Unsubscribe() }() // synchronous, unlike the end by ctx
		for {
			select {
			case ev := <-events:
				if !yield(ev, nil) {
					return
				}
			case <-sub.Done():
				err := sub.Err()
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				yield(handlers.Event{}, err)
				return
			case <-ctx.Done():
				yield(handlers.Event{}, ctx.Err())
				return
			}
		}
	}
}
