package conformance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// X1-X5 with the short profile (ACCESS_TOKEN_TTL 15s, auth timeout 5 s).
// Two clients run side by side, the wait for expiry being most of the time:
//
//   - email/password: the server holds the JWT, so the client learns its
//     lifetime from TOKEN_EXPIRED. It re-authenticates (with the rotated
//     refresh token) on the same connection within the auth timeout, the
//     subscriptions keep delivering, and the manager resyncs each exactly
//     once.
//   - token source: the client knows the JWT's exp and re-authenticates
//     with a fresh token before it: no TOKEN_EXPIRED, nothing to resync.
//
// It runs in parallel with TestHeartbeat: both only wait for time to pass
// on the short profile, and neither restarts or resets what the other uses.
func TestTokenExpiry(t *testing.T) {
	parallel(t)
	run(t, scenarioTokenExpiry)
}

func scenarioTokenExpiry(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Short)
	creds := needLogin(t, tg)
	set := srv.Settings()
	if set.TokenTTL > time.Minute {
		t.Skipf("ACCESS_TOKEN_TTL is %v here; this scenario needs the short profile's 15s", set.TokenTTL)
	}
	must(t, srv.Reset(ctx))
	rest := srv.REST()
	// Bounds the wait for an expiry: the token's lifetime, plus slack.
	expiryWait := set.TokenTTL + eventTimeout

	var wg sync.WaitGroup
	wg.Go(func() {
		t.Run("email and password", func(t *testing.T) {
			c := connect(ctx, t, srv, conn.Auth{Email: creds.AdminEmail, Password: creds.AdminPassword}, clientOpts{})
			posts := newPosts(t)
			sub := subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Limit: -1, Filter: map[string]any{"title": map[string]any{"_starts_with": "pw "}}}})
			session := c.Conn().Session()

			wctx, cancel := within(ctx, expiryWait)
			defer cancel()
			var expiredAt, reauthAt time.Time
			err := c.waitFor(wctx, func(errs []error, _ []conn.ConnectReason) bool {
				if slices.ContainsFunc(errs, func(e error) bool { return errors.Is(e, protocol.ErrTokenExpired) }) {
					expiredAt = time.Now()
					return true
				}
				return false
			})
			if err != nil {
				t.Fatalf("no TOKEN_EXPIRED within %v: %v", expiryWait, err)
			}
			err = c.waitFor(wctx, func(_ []error, rs []conn.ConnectReason) bool {
				if slices.Contains(rs, conn.ReasonReauthenticated) {
					reauthAt = time.Now()
					return true
				}
				return false
			})
			if err != nil {
				t.Fatalf("no re-authentication after TOKEN_EXPIRED: %v (errors %v)", err, c.Errors())
			}
			if took := reauthAt.Sub(expiredAt); took >= set.AuthTimeout {
				t.Fatalf("re-authenticated %v after TOKEN_EXPIRED, beyond the auth timeout %v", took, set.AuthTimeout)
			}
			// The manager resyncs the subscription once; then it delivers.
			must(t, posts.WaitFor(wctx, func() bool { return posts.Stats().Resyncs >= 1 }))
			p, err := rest.CreatePost(ctx, Post{Title: "pw after expiry", Status: "published"})
			must(t, err)
			must(t, posts.WaitFor(wctx, func() bool { _, ok := posts.Get(p.ID); return ok }))

			if cur := c.Conn().Session(); cur != session || session.Err() != nil {
				t.Fatalf("the session was replaced (%v): TOKEN_EXPIRED must not cost a reconnect", session.Err())
			}
			if got := c.Connects(); !slices.Equal(got, []conn.ConnectReason{conn.ReasonConnected, conn.ReasonReauthenticated}) {
				t.Fatalf("OnConnect ran for %v", got)
			}
			if n := posts.Stats().Resyncs; n != 1 {
				t.Fatalf("the replica was resynced %d times, want exactly 1", n)
			}
			if n := sub.Stats().Resyncs; n != 1 {
				t.Fatalf("the subscription was resynced %d times, want exactly 1", n)
			}
			for _, e := range c.Errors() {
				if errors.Is(e, protocol.ErrAuthTimeout) || errors.Is(e, protocol.ErrAuthFailed) {
					t.Fatalf("error after TOKEN_EXPIRED: %v", e)
				}
			}
			allActive(t, c)
			c.checkWire(t)
		})
	})
	wg.Go(func() {
		t.Run("token source", func(t *testing.T) {
			var mu sync.Mutex
			var exps []time.Time
			called := make(chan struct{}, 16)
			src := func(ctx context.Context) (string, error) {
				tok, err := rest.Login(ctx, creds.AdminEmail, creds.AdminPassword)
				if err != nil {
					return "", err
				}
				mu.Lock()
				exps = append(exps, jwtExp(tok.AccessToken))
				mu.Unlock()
				called <- struct{}{}
				return tok.AccessToken, nil
			}
			c := connect(ctx, t, srv, conn.Auth{TokenSource: src}, clientOpts{})
			posts := newPosts(t)
			sub := subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts", Query: &protocol.Query{Limit: -1, Filter: map[string]any{"title": map[string]any{"_starts_with": "ts "}}}})
			session := c.Conn().Session()
			<-called
			mu.Lock()
			firstExp := exps[0]
			mu.Unlock()
			if firstExp.IsZero() {
				t.Fatal("the access token from /auth/login is not a JWT with exp")
			}

			// The refresh comes before exp.
			wctx, cancel := within(ctx, expiryWait)
			defer cancel()
			select {
			case <-called:
			case <-wctx.Done():
				t.Fatalf("the token source was not asked again before exp")
			}
			if now := time.Now(); !now.Before(firstExp) {
				t.Fatalf("refreshed at %v, after the first token's exp %v", now, firstExp)
			}
			// Nothing signals that no TOKEN_EXPIRED comes: let the first
			// token's exp (one-second resolution) pass, then write.
			timer := time.NewTimer(time.Until(firstExp) + 1500*time.Millisecond)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				t.Fatal(ctx.Err())
			}
			p, err := rest.CreatePost(ctx, Post{Title: "ts after first exp", Status: "published"})
			must(t, err)
			must(t, posts.WaitFor(wctx, func() bool { _, ok := posts.Get(p.ID); return ok }))

			for _, e := range c.Errors() {
				if errors.Is(e, protocol.ErrTokenExpired) {
					t.Fatalf("TOKEN_EXPIRED although the token source refreshed before exp")
				}
			}
			if cur := c.Conn().Session(); cur != session || session.Err() != nil {
				t.Fatalf("the session was replaced: %v", session.Err())
			}
			if got := c.Connects(); !slices.Equal(got, []conn.ConnectReason{conn.ReasonConnected}) {
				t.Fatalf("OnConnect ran for %v; a refresh before expiry restores nothing", got)
			}
			if n := sub.Stats().Resyncs; n != 0 {
				t.Fatalf("%d resyncs after a refresh before expiry, want none", n)
			}
		})
	})
	wg.Wait()
}

// jwtExp returns the exp claim of a JWT, zero when it has none.
func jwtExp(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp == 0 {
		return time.Time{}
	}
	return time.Unix(claims.Exp, 0)
}

// HB: with the short heartbeat (3 s), a connection on which the client
// never pings on its own stays up through several server pings: the client
// answers each. Runs in parallel with TestTokenExpiry.
func TestHeartbeat(t *testing.T) {
	parallel(t)
	run(t, scenarioHeartbeat)
}

func scenarioHeartbeat(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Short)
	period := srv.Settings().Heartbeat
	if period <= 0 || period > 10*time.Second {
		t.Skipf("heartbeat period %v; this scenario needs the short profile's 3 s", period)
	}
	// PingInterval -1: the client sends nothing on its own, so only its
	// answers to the server's pings keep the connection open.
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{PingInterval: -1})
	session := c.Conn().Session()

	const pings = 4 // the server checked three answers when the fourth comes
	from := 0
	var at []time.Time
	for i := range pings {
		wctx, cancel := within(ctx, 2*period+eventTimeout)
		idx, err := c.wire.Wait(wctx, from, func(f WireFrame) bool { return !f.Out && f.Type == protocol.TypePing })
		cancel()
		if err != nil {
			t.Fatalf("server ping %d did not come: %v (session: %v)", i+1, err, session.Err())
		}
		at = append(at, c.wire.Frames(idx)[0].At)
		from = idx + 1
	}
	// Between the first and the last ping the client sent only pongs.
	var pongs int
	frames := c.wire.Frames(0)
	for _, f := range frames {
		if !f.Out || f.At.Before(at[0]) || f.At.After(at[len(at)-1]) {
			continue
		}
		if f.Type != protocol.TypePong {
			t.Fatalf("the client sent %s while idle", f.Data)
		}
		pongs++
	}
	if pongs < pings-1 {
		t.Fatalf("%d pongs answered %d pings", pongs, pings-1)
	}
	if cur := c.Conn().Session(); cur != session || session.Err() != nil {
		t.Fatalf("the idle session did not survive: %v", session.Err())
	}
	if rtt, err := c.Conn().Ping(ctx); err != nil {
		t.Fatalf("ping after %v idle: %v", at[len(at)-1].Sub(at[0]), err)
	} else {
		t.Logf("idle for %v through %d server pings; then a ping took %v", at[len(at)-1].Sub(at[0]).Round(time.Millisecond), pings, rtt)
	}
	if got := c.Connects(); len(got) != 1 {
		t.Fatalf("OnConnect ran %d times", len(got))
	}
}
