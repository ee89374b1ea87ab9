package relay

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvEntry is one entry of a bucket, as a watch delivers it.
type kvEntry struct {
	key     string
	value   []byte
	rev     uint64
	deleted bool // a delete or purge marker
	created time.Time
}

// watchBucket calls fn for every entry of a bucket: the latest entry of
// each key (from is 0) or every entry after revision from-1, then fn(nil)
// once those initial entries are done, then live entries, until ctx ends
// or fn fails. It uses an ordered pull consumer, which recreates itself
// after a disconnect or a NATS server restart and goes on after the last
// entry it delivered (the KV watcher of nats.go stays silent after a
// server restart). It returns ctx's error, fn's error, or the consumer's.
func watchBucket(ctx context.Context, js jetstream.JetStream, bucket string, from uint64, fn func(*kvEntry) error) error {
	prefix := "$KV." + bucket + "."
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ">"}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := js.OrderedConsumer(ctx, "KV_"+bucket, cfg)
	if err != nil {
		return err
	}
	initDone := false
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		initDone = true
		if err := fn(nil); err != nil {
			return err
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return err
			}
			continue // missed heartbeats and the like: the consumer resets itself
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		key, ok := strings.CutPrefix(msg.Subject(), prefix)
		if !ok {
			continue
		}
		e := &kvEntry{key: key, value: msg.Data(), rev: md.Sequence.Stream, created: md.Timestamp}
		if h := msg.Headers(); h != nil {
			op, reason := h.Get("KV-Operation"), h.Get(jetstream.MarkerReasonHeader)
			e.deleted = op == "DEL" || op == "PURGE" || reason != ""
		}
		if err := fn(e); err != nil {
			return err
		}
		if !initDone && md.NumPending == 0 {
			initDone = true
			if err := fn(nil); err != nil {
				return err
			}
		}
	}
}

// watchChan runs watchBucket in a goroutine and hands its entries (nil for
// the end of the initial ones) over a channel, closed when the watch ends.
// Cancel ctx to end it.
func watchChan(ctx context.Context, js jetstream.JetStream, bucket string, from uint64) <-chan *kvEntry {
	ch := make(chan *kvEntry, 256)
	go func() {
		defer close(ch)
		_ = watchBucket(ctx, js, bucket, from, func(e *kvEntry) error {
			select {
			case ch <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return ch
}
