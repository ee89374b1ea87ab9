package testutil

// Must returns v, and panics if err is set: for test set-ups whose
// arguments are known to be valid, such as store.New with a Key.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
