package store_test

import (
	"testing"

	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/store"
)

// Reconciles are counted with the time they took, summed.
func TestReconcileTimeIsSummed(t *testing.T) {
	e := setup(t)
	c := newPosts(store.Options[int64, Post]{})
	defer c.Close()
	if _, err := c.Subscribe(ctx(t), e.m, manager.SubscribeOptions{Collection: "posts", Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.ReconcileTime != 0 || st.Reconciles != 0 {
		t.Fatalf("before any reconcile: %+v", st)
	}
	var sum int64
	for i := 1; i <= 2; i++ {
		if err := c.Reconcile(ctx(t)); err != nil {
			t.Fatal(err)
		}
		sum += int64(c.Status().LastReconcileTook)
		if st := c.Stats(); st.Reconciles != uint64(i) || int64(st.ReconcileTime) != sum {
			t.Fatalf("after %d reconciles: %+v, want ReconcileTime %d", i, st, sum)
		}
	}
	if sum <= 0 {
		t.Fatal("reconciles took no time")
	}
}
