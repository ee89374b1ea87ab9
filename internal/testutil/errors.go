package testutil

import (
	"errors"
	"sync"
)

// Errors collects the errors an OnError callback receives; safe for
// concurrent use.
type Errors struct {
	mu   sync.Mutex
	errs []error
}

// On records err; pass it as the OnError callback.
func (e *Errors) On(err error) {
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
}

// Count returns how many of the recorded errors match target (errors.Is).
func (e *Errors) Count(target error) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, err := range e.errs {
		if errors.Is(err, target) {
			n++
		}
	}
	return n
}
