// Package goid tells the current goroutine's id, so that a Close called from
// inside a callback or handler can skip waiting for the goroutine it runs
// on, which would wait for itself.
package goid

import (
	"bytes"
	"runtime"
	"strconv"
)

// Current parses the current goroutine's id from its stack header
// ("goroutine 42 [running]:"). It costs a stack trace of one frame: call it
// once per goroutine or per Close, never per event.
func Current() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		id, _ := strconv.ParseUint(string(b[:i]), 10, 64)
		return id
	}
	return 0
}
