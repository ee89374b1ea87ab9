package graphql

import (
	"context"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Source is a replica of one collection over /graphql in the form of a
// store.Source: coll.Follow(ctx, m.Source(opts)) keeps coll equal to the
// server for as long as ctx, with Replicate's ordering and resyncs.
type Source struct {
	m    *Manager
	opts ReplicaOptions
}

// Source returns a store.Source for opts (Persistent is ignored: the
// replica lasts as long as Run's ctx).
func (m *Manager) Source(opts ReplicaOptions) *Source {
	opts.Persistent = false
	return &Source{m: m, opts: opts}
}

// Run replicates into h until ctx ends (it returns ctx's error), the
// Manager closes (protocol.ErrClosed) or the server refuses the
// subscription (its *SubscribeError). A refused first snapshot is returned
// at once.
func (s *Source) Run(ctx context.Context, h handlers.Handler) error {
	sub, err := s.m.Replicate(ctx, s.opts, h)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-sub.Done():
		if err := sub.Err(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return protocol.ErrClosed
	}
}
