package store

import (
	"context"
	"iter"
)

// Changes returns the collection's changes as a sequence to range over, the
// iterator form of AddListener:
//
//	for ch, err := range posts.Changes(ctx) {
//		if err != nil {
//			return err // ctx.Err() or ErrClosed
//		}
//		// ch.Op is OpAdd (ch.Initial for the rows present when the loop
//		// started), OpUpdate, OpDelete or OpReset.
//	}
//
// Each range over the sequence is a listener of its own, added when the
// loop starts and removed when it ends: it first yields an OpAdd marked
// Initial for every row present, then every later change in order. The
// loop body is the listener: changes wait for it in the listener's bounded
// queue (Options.ListenerQueue, ListenerBytes), and a body that falls
// behind it gets one OpReset in place of its backlog (re-read Snapshot).
// A non-nil error is the last pair: ctx is done, or the collection closed
// (ErrClosed).
func (c *Collection[K, T]) Changes(ctx context.Context) iter.Seq2[Change[K, T], error] {
	return func(yield func(Change[K, T], error) bool) {
		loop, stop := context.WithCancel(ctx)
		defer stop()
		changes := make(chan Change[K, T]) // the listener's queue buffers
		remove := c.AddListener(ListenerFunc[K, T](func(ch Change[K, T]) {
			select {
			case changes <- ch:
			case <-loop.Done():
			}
		}))
		defer remove()
		for {
			select {
			case ch := <-changes:
				if !yield(ch, nil) {
					return
				}
			case <-c.closedCh:
				yield(Change[K, T]{}, ErrClosed)
				return
			case <-ctx.Done():
				yield(Change[K, T]{}, ctx.Err())
				return
			}
		}
	}
}
