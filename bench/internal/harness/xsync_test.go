package harness

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/puzpuzpuz/xsync/v3"
)

// The design card names github.com/puzpuzpuz/xsync/v3. These benchmarks
// measure it where it could serve, against what the library uses, under the
// library's access patterns; bench/README.md records the figures and the
// decision. Run with -cpu 1,2 (and more on a larger machine).

type benchPost struct {
	ID    int64
	Title string
	Views int
}

// replicaLock is the read path of a store.Collection: Get under a read
// lock while a writer applies a steady stream of events (one per 100 µs,
// ten times what a real Directus sends) under the write lock.
type replicaLock interface {
	RLockFor(func())
	LockFor(func())
}

type rwLock struct{ mu sync.RWMutex }

func (l *rwLock) RLockFor(f func()) { l.mu.RLock(); f(); l.mu.RUnlock() }
func (l *rwLock) LockFor(f func())  { l.mu.Lock(); f(); l.mu.Unlock() }

type rbLock struct{ mu *xsync.RBMutex }

func (l *rbLock) RLockFor(f func()) { t := l.mu.RLock(); f(); l.mu.RUnlock(t) }
func (l *rbLock) LockFor(f func())  { l.mu.Lock(); f(); l.mu.Unlock() }

func BenchmarkReplicaRead(b *testing.B) {
	const rows = 10_000
	for _, kind := range []string{"sync.RWMutex", "xsync.RBMutex"} {
		b.Run(kind, func(b *testing.B) {
			var l replicaLock = &rwLock{}
			if kind == "xsync.RBMutex" {
				l = &rbLock{mu: xsync.NewRBMutex()}
			}
			m := make(map[int64]benchPost, rows)
			for i := range int64(rows) {
				m[i] = benchPost{ID: i, Title: "post " + strconv.FormatInt(i, 10)}
			}
			stop := make(chan struct{})
			var writes atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTicker(100 * time.Microsecond)
				defer t.Stop()
				for i := int64(0); ; i++ {
					select {
					case <-stop:
						return
					case <-t.C:
					}
					k := i % rows
					l.LockFor(func() { p := m[k]; p.Views++; m[k] = p })
					writes.Add(1)
				}
			}()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 1))
				var sink int
				for pb.Next() {
					k := r.Int64N(rows)
					l.RLockFor(func() { sink += m[k].Views })
				}
				_ = sink
			})
			b.StopTimer()
			close(stop)
			wg.Wait()
		})
	}
}

// BenchmarkRequestRegistry is the pending-request registry of a session:
// each request stores its uid, the read loop loads it on the reply, the
// request deletes it.
func BenchmarkRequestRegistry(b *testing.B) {
	b.Run("map+Mutex", func(b *testing.B) {
		var mu sync.Mutex
		m := map[string]*int{}
		var seq atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			v := new(int)
			for pb.Next() {
				uid := "dr-" + strconv.FormatUint(seq.Add(1), 10)
				mu.Lock()
				m[uid] = v
				mu.Unlock()
				mu.Lock()
				_ = m[uid]
				mu.Unlock()
				mu.Lock()
				delete(m, uid)
				mu.Unlock()
			}
		})
	})
	b.Run("xsync.MapOf", func(b *testing.B) {
		m := xsync.NewMapOf[string, *int]()
		var seq atomic.Uint64
		b.RunParallel(func(pb *testing.PB) {
			v := new(int)
			for pb.Next() {
				uid := "dr-" + strconv.FormatUint(seq.Add(1), 10)
				m.Store(uid, v)
				_, _ = m.Load(uid)
				m.Delete(uid)
			}
		})
	})
}
