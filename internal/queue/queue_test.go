package queue

import "testing"

func TestBoundsInItemsAndBytes(t *testing.T) {
	q := New[int](4, 100)
	if !q.Fits(1000) {
		t.Fatal("an empty queue must accept one item of any size")
	}
	q.Push(0, 1000)
	if q.Fits(1) {
		t.Fatal("over the byte budget, still fits")
	}
	q.Pop()
	q.Done(1)
	for i := 0; i < 4; i++ {
		if !q.Fits(10) {
			t.Fatalf("item %d does not fit", i)
		}
		q.Push(i, 10)
	}
	if q.Fits(10) {
		t.Fatal("a fifth item fits a queue of 4")
	}
	if q.Bytes() != 40 || q.Len() != 4 {
		t.Fatalf("len %d bytes %d", q.Len(), q.Bytes())
	}
	if q.Below(1, 2) {
		t.Fatal("a full queue is below half")
	}
	q.Pop()
	q.Pop()
	if !q.Below(1, 2) {
		t.Fatal("half full is not below half")
	}
}

func TestOrderAcrossWrapAndGrowth(t *testing.T) {
	q := New[int](0, 0)
	next, want := 0, 0
	for round := 0; round < 50; round++ {
		for i := 0; i < round%7+1; i++ {
			q.Push(next, 1)
			next++
		}
		for i := 0; i < round%5; i++ {
			v, ok := q.Pop()
			if !ok {
				break
			}
			if v != want {
				t.Fatalf("popped %d, want %d", v, want)
			}
			want++
		}
	}
	for {
		v, ok := q.Pop()
		if !ok {
			break
		}
		if v != want {
			t.Fatalf("popped %d, want %d", v, want)
		}
		want++
	}
	if want != next {
		t.Fatalf("popped %d of %d", want, next)
	}
}

// TestMemoryStaysBoundedDuringALongBurst: a queue that never empties
// during a burst keeps an array of the order of its bound, and an empty
// queue gives a large array back.
func TestMemoryStaysBoundedDuringALongBurst(t *testing.T) {
	q := New[[64]byte](100, 0)
	for i := 0; i < 100_000; i++ {
		if q.Fits(1) {
			q.Push([64]byte{}, 1)
		}
		if i%3 == 0 {
			q.Pop()
			q.Done(1)
		}
		if len(q.buf) > 128 {
			t.Fatalf("array of %d slots for a queue of 100", len(q.buf))
		}
	}
	for q.Len() > 0 {
		q.Pop()
	}
	if q.buf != nil {
		t.Fatalf("an empty queue keeps %d slots", len(q.buf))
	}
}

func TestProgress(t *testing.T) {
	q := New[int](0, 0)
	q.Push(1, 1)
	q.Push(2, 1)
	target := q.Pushed()
	sig := q.Progress()
	q.Pop()
	q.Done(1)
	select {
	case <-sig:
	default:
		t.Fatal("progress not signalled")
	}
	if q.DoneCount() >= target {
		t.Fatal("done before the second item")
	}
	if n := q.Discard(); n != 1 || q.DoneCount() != target {
		t.Fatalf("discarded %d, done %d of %d", n, q.DoneCount(), target)
	}
}
