package conformance

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// needLogin skips t when the admin's email and password are unknown.
func needLogin(t testing.TB, tg Target) Credentials {
	t.Helper()
	c := tg.Creds()
	if c.AdminEmail == "" || c.AdminPassword == "" {
		missing(t, loadRealEnv(), "DIRECTUS_ADMIN_EMAIL and DIRECTUS_ADMIN_PASSWORD are not set")
	}
	return c
}

// seedPost resets the server and creates one post.
func seedPost(ctx context.Context, t testing.TB, srv Server, title string) Post {
	t.Helper()
	must(t, srv.Reset(ctx))
	p, err := srv.REST().CreatePost(ctx, Post{Title: title, Status: "published", Views: 1})
	must(t, err)
	return p
}

// actsAsAdmin checks that c's connection has the admin's identity: a
// replica of posts (which the Public role cannot read) gets the seeded row.
func actsAsAdmin(ctx context.Context, t *testing.T, c *client, seeded Post) {
	t.Helper()
	posts := newPosts(t)
	subscribe(ctx, t, posts, c, manager.SubscribeOptions{Collection: "posts"})
	if got, ok := posts.Get(seeded.ID); !ok || got != seeded {
		t.Fatalf("replica of posts holds %+v (found %v), want %+v", got, ok, seeded)
	}
}

// H1, H4, H5, H11 (token forms): every auth form of the handshake mode.
func TestAuthForms(t *testing.T) { run(t, scenarioAuthForms) }

func scenarioAuthForms(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	seeded := seedPost(ctx, t, srv, "auth forms")
	rest := srv.REST()

	t.Run("static token", func(t *testing.T) {
		c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().AdminToken}, clientOpts{})
		actsAsAdmin(ctx, t, c, seeded)
	})
	t.Run("JWT from REST login", func(t *testing.T) {
		creds := needLogin(t, tg)
		tok, err := rest.Login(ctx, creds.AdminEmail, creds.AdminPassword)
		must(t, err)
		c := connect(ctx, t, srv, conn.Auth{Token: tok.AccessToken}, clientOpts{})
		actsAsAdmin(ctx, t, c, seeded)
	})
	t.Run("email and password", func(t *testing.T) {
		creds := needLogin(t, tg)
		refreshed := make(chan string, 4)
		c := connect(ctx, t, srv, conn.Auth{Email: creds.AdminEmail, Password: creds.AdminPassword},
			clientOpts{OnRefreshToken: func(s string) { refreshed <- s }})
		actsAsAdmin(ctx, t, c, seeded)
		wctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		select {
		case tok := <-refreshed:
			if tok == "" {
				t.Fatal("empty refresh token")
			}
		case <-wctx.Done():
			t.Fatal("the email/password auth reply carried no refresh token")
		}
	})
	t.Run("refresh token rotates", func(t *testing.T) {
		creds := needLogin(t, tg)
		tok, err := rest.Login(ctx, creds.AdminEmail, creds.AdminPassword)
		must(t, err)
		refreshed := make(chan string, 4)
		c := connect(ctx, t, srv, conn.Auth{RefreshToken: tok.RefreshToken},
			clientOpts{OnRefreshToken: func(s string) { refreshed <- s }})
		actsAsAdmin(ctx, t, c, seeded)
		var rotated string
		wctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		select {
		case rotated = <-refreshed:
		case <-wctx.Done():
			t.Fatal("the refresh-token auth reply carried no new refresh token")
		}
		if rotated == tok.RefreshToken {
			t.Fatal("the refresh token did not rotate")
		}
		// The rotated one works; the old one is refused (see TestAuthFailures).
		c2 := connect(ctx, t, srv, conn.Auth{RefreshToken: rotated}, clientOpts{})
		actsAsAdmin(ctx, t, c2, seeded)
	})
	t.Run("token source", func(t *testing.T) {
		creds := needLogin(t, tg)
		var calls atomic.Int32
		src := func(ctx context.Context) (string, error) {
			calls.Add(1)
			tok, err := rest.Login(ctx, creds.AdminEmail, creds.AdminPassword)
			return tok.AccessToken, err
		}
		c := connect(ctx, t, srv, conn.Auth{TokenSource: src}, clientOpts{})
		actsAsAdmin(ctx, t, c, seeded)
		if calls.Load() < 1 {
			t.Fatal("the token source was not called")
		}
	})
}

// H3, H5b, H6: handshake failures are typed, not retried, and generic.
func TestAuthFailures(t *testing.T) { run(t, scenarioAuthFailures) }

func scenarioAuthFailures(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)

	// refused checks that Connect fails at once with the generic handshake
	// AUTH_FAILED (no uid echoed) and leaves the client closed.
	refused := func(t *testing.T, auth conn.Auth) {
		t.Helper()
		c := newClient(t, srv, auth, clientOpts{})
		cctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		err := c.Connect(cctx)
		if !errors.Is(err, protocol.ErrAuthFailed) {
			t.Fatalf("Connect: %v, want AUTH_FAILED", err)
		}
		var se *protocol.ServerError
		if !errors.As(err, &se) || se.Type != protocol.TypeAuth || se.Message != "Authentication handshake failed." || se.UID != "" {
			t.Fatalf("Connect: %#v, want the generic handshake failure without uid", se)
		}
		if s := c.State(); s != conn.StateClosed {
			t.Fatalf("state %s after a refused handshake, want closed", s)
		}
	}

	t.Run("bad token", func(t *testing.T) {
		refused(t, conn.Auth{Token: "not-a-valid-token"})
	})
	t.Run("wrong password", func(t *testing.T) {
		creds := needLogin(t, tg)
		refused(t, conn.Auth{Email: creds.AdminEmail, Password: creds.AdminPassword + "-wrong"})
	})
	t.Run("rotated refresh token", func(t *testing.T) {
		creds := needLogin(t, tg)
		tok, err := srv.REST().Login(ctx, creds.AdminEmail, creds.AdminPassword)
		must(t, err)
		rotated := make(chan string, 1)
		c := connect(ctx, t, srv, conn.Auth{RefreshToken: tok.RefreshToken},
			clientOpts{OnRefreshToken: func(s string) { rotated <- s }})
		wctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		select {
		case <-rotated:
		case <-wctx.Done():
			t.Fatal("no rotated refresh token")
		}
		_ = c.Close()
		refused(t, conn.Auth{RefreshToken: tok.RefreshToken})
	})
}
