package conn_test

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/protocol"
)

// TestSendRatePaces: against a server that allows 20 frames per 200 ms, a
// Conn paced at 80 frames/s with bursts of 1 (at most 17 frames in any
// 200 ms) never trips the limiter, however many requests its callers make
// at once; unpaced, the same requests trip it and still get their replies
// (pings are resent) or a RateLimitedError.
func TestSendRatePaces(t *testing.T) {
	t.Parallel() // waits for timers, not for the CPU
	for _, paced := range []bool{true, false} {
		srv := directustest.NewServer(&directustest.Options{RateLimit: directustest.RateLimit{Points: 20, Duration: 200 * time.Millisecond}})
		cfg := &conn.Config{URL: srv.URL(), Auth: conn.Auth{Token: directustest.AdminToken}, PingInterval: -1}
		if paced {
			cfg.SendRate = 80
		}
		c, err := conn.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Connect(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		var g errgroup.Group
		limited := 0
		results := make(chan error, 60)
		for range 60 {
			g.Go(func() error {
				_, err := c.Ping(ctxT(t))
				results <- err
				return nil
			})
		}
		_ = g.Wait()
		close(results)
		for err := range results {
			var rl *conn.RateLimitedError
			switch {
			case err == nil:
			case errors.As(err, &rl) && errors.Is(err, protocol.ErrRequestsExceeded):
				limited++
			default:
				t.Fatalf("paced=%v: ping: %v", paced, err)
			}
		}
		drops := srv.RateLimitDrops()
		t.Logf("paced=%v: %d frames dropped by the limiter, %d pings given up", paced, drops, limited)
		if paced && (drops != 0 || limited != 0) {
			t.Fatalf("paced: the limiter dropped %d frames", drops)
		}
		if !paced && drops == 0 {
			t.Fatal("unpaced: the limiter dropped nothing, the test tests nothing")
		}
		_ = c.Close()
		srv.Close()
	}
}

// TestSendRateValidated: a bad pace is a ConfigError.
func TestSendRateValidated(t *testing.T) {
	for _, cfg := range []conn.Config{{SendRate: -1}, {SendBurst: -1}} {
		cfg.URL = "http://127.0.0.1:1"
		var ce *protocol.ConfigError
		if _, err := conn.New(&cfg); !errors.As(err, &ce) {
			t.Errorf("%+v: %v, want a ConfigError", cfg, err)
		}
	}
}
