package harness

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// Marks records when each create, update and delete event was applied to a
// replica: the i-th applied event at Times[i] (unix nanoseconds). One
// goroutine marks at a time; any goroutine may read.
type Marks struct {
	times     []int64
	n         atomic.Int64
	firstInit atomic.Int64 // when the first init was applied
	initAt    atomic.Int64 // when the last init was applied
	inits     atomic.Int64
}

// NewMarks preallocates room for the expected number of events, so that
// marking allocates nothing while measuring.
func NewMarks(events int) *Marks { return &Marks{times: make([]int64, events)} }

// Mark records one applied event.
func (m *Marks) Mark() {
	n := m.n.Load()
	if int(n) < len(m.times) {
		m.times[n] = time.Now().UnixNano()
	}
	m.n.Store(n + 1)
}

// MarkInit records an applied init.
func (m *Marks) MarkInit() {
	now := time.Now().UnixNano()
	m.firstInit.CompareAndSwap(0, now)
	m.initAt.Store(now)
	m.inits.Add(1)
}

// FirstInitAt is when the first init was applied.
func (m *Marks) FirstInitAt() time.Time { return time.Unix(0, m.firstInit.Load()) }

// Count is the number of events applied.
func (m *Marks) Count() int { return int(m.n.Load()) }

// Inits is the number of inits applied (more than one means resyncs).
func (m *Marks) Inits() int { return int(m.inits.Load()) }

// InitAt is when the last init was applied.
func (m *Marks) InitAt() time.Time { return time.Unix(0, m.initAt.Load()) }

// Times returns the marks recorded so far.
func (m *Marks) Times() []int64 {
	n := min(m.Count(), len(m.times))
	return m.times[:n]
}

// Last is when the last event was applied (zero time if none was).
func (m *Marks) Last() time.Time {
	t := m.Times()
	if len(t) == 0 {
		return time.Time{}
	}
	return time.Unix(0, t[len(t)-1])
}

// WaitCount waits until n events were applied, or until none was applied
// for quiet (once the first was), or ctx ends. It polls every millisecond,
// so that waiting costs the client nothing per event.
func (m *Marks) WaitCount(ctx context.Context, n int, quiet time.Duration) error {
	return m.WaitDone(ctx, n, quiet, nil)
}

// WaitDone is WaitCount, and also returns as soon as done reports true;
// done is asked only when nothing was applied for 20 ms (a client that
// resynced skips events, so its count never reaches n).
func (m *Marks) WaitDone(ctx context.Context, n int, quiet time.Duration, done func() bool) error {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	var last [2]int
	asked := false
	since := time.Now()
	for {
		c := [2]int{m.Count(), m.Inits()}
		if c[0] >= n {
			return nil
		}
		if c != last {
			last, since, asked = c, time.Now(), false
		} else if idle := time.Since(since); done != nil && !asked && idle > 20*time.Millisecond {
			asked = true
			if done() {
				return nil
			}
		} else if quiet > 0 && idle > quiet {
			return errQuiet
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

var errQuiet = errors.New("no event applied for a while")

// Client keeps a replica of the posts collection.
type Client interface {
	// Start connects to url (http://host:port) with a static token,
	// subscribes to every row of posts and returns once the init is applied.
	Start(ctx context.Context, url, token string) error
	// Rows returns a copy of the replica.
	Rows() []Post
	// Close disconnects and waits for the client's goroutines.
	Close() error
}

// LibClient is the library: a manager.Manager and a store.Collection, used
// as their documentation shows. The handler given to the subscription is the
// Collection itself, wrapped only to mark each applied event.
type LibClient struct {
	Marks *Marks
	// ManagerOptions and ConnConfig tune the library; nil and zero mean the
	// defaults.
	ManagerOptions *manager.Options
	Tune           func(*conn.Config)
	// StoreOptions, when set, is used instead of the default options (only
	// Key set).
	StoreOptions *store.Options[int64, Post]

	M    *manager.Manager
	Coll *store.Collection[int64, Post]
	Sub  *manager.Subscription
}

// Start implements Client.
func (c *LibClient) Start(ctx context.Context, url, token string) error {
	cfg := &conn.Config{URL: url, Auth: conn.Auth{Token: token}}
	if c.Tune != nil {
		c.Tune(cfg)
	}
	m, err := manager.New(cfg, c.ManagerOptions)
	if err != nil {
		return err
	}
	if err := m.Connect(ctx); err != nil {
		_ = m.Close()
		return err
	}
	opts := store.Options[int64, Post]{Key: func(p Post) int64 { return p.ID }}
	if c.StoreOptions != nil {
		opts = *c.StoreOptions
	}
	coll, err := store.New(opts)
	if err != nil {
		_ = m.Close()
		return err
	}
	marks := c.Marks
	h := handlers.HandlerFunc(func(ev handlers.Event) error {
		err := coll.Handle(ev)
		switch ev.Kind {
		case handlers.KindInit:
			marks.MarkInit()
		case handlers.KindCreate, handlers.KindUpdate, handlers.KindDelete:
			marks.Mark()
		}
		return err
	})
	// What store.Collection.Subscribe does, with the marking handler: every
	// row (limit -1), returned once the init is applied.
	sub, err := m.Subscribe(ctx, manager.SubscribeOptions{
		Collection: "posts", Query: &protocol.Query{Limit: -1}, Persistent: true,
	}, h)
	if err == nil {
		err = coll.WaitSynced(ctx)
	}
	// The Collection reports synced from inside Handle; the mark follows.
	for err == nil && marks.Inits() == 0 {
		if err = ctx.Err(); err == nil {
			time.Sleep(50 * time.Microsecond)
		}
	}
	if err != nil {
		_ = coll.Close()
		_ = m.Close()
		return err
	}
	c.M, c.Coll, c.Sub = m, coll, sub
	return nil
}

// Rows implements Client.
func (c *LibClient) Rows() []Post { return c.Coll.List() }

// Close implements Client.
func (c *LibClient) Close() error {
	if c.M == nil {
		return nil
	}
	_ = c.Coll.Close()
	return c.M.Close()
}
