package store

// SetViewCushion sets the cushion of the views made after it, and returns
// a function that restores it.
func SetViewCushion(n int) (restore func()) {
	old := cushion.Swap(int64(n))
	return func() { cushion.Store(old) }
}
