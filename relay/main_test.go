package relay_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every relay, Source and NATS connection a test starts is gone when it
// ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
