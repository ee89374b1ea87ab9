package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// T1-T3, T5: strict mode takes the token at the HTTP upgrade; without one,
// or with a bad one, the upgrade gets a typed 401.
func TestStrictMode(t *testing.T) { run(t, scenarioStrictMode) }

func scenarioStrictMode(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Strict)
	seeded := seedPost(ctx, t, srv, "strict")

	t.Run("static token", func(t *testing.T) {
		c := connect(ctx, t, srv, conn.Auth{Mode: conn.AuthStrict, Token: tg.Creds().AdminToken}, clientOpts{})
		actsAsAdmin(ctx, t, c, seeded)
		for _, f := range c.wire.Frames(0) {
			if f.Out && f.Type == protocol.TypeAuth {
				t.Fatalf("an auth frame was sent in strict mode: the token belongs in the upgrade URL")
			}
		}
	})
	t.Run("JWT from REST login", func(t *testing.T) {
		creds := needLogin(t, tg)
		tok, err := srv.REST().Login(ctx, creds.AdminEmail, creds.AdminPassword)
		must(t, err)
		c := connect(ctx, t, srv, conn.Auth{Mode: conn.AuthStrict, Token: tok.AccessToken}, clientOpts{})
		actsAsAdmin(ctx, t, c, seeded)
	})
	t.Run("token source", func(t *testing.T) {
		creds := needLogin(t, tg)
		var calls atomic.Int32
		src := func(ctx context.Context) (string, error) {
			calls.Add(1)
			tok, err := srv.REST().Login(ctx, creds.AdminEmail, creds.AdminPassword)
			return tok.AccessToken, err
		}
		c := connect(ctx, t, srv, conn.Auth{Mode: conn.AuthStrict, TokenSource: src}, clientOpts{})
		actsAsAdmin(ctx, t, c, seeded)
		if calls.Load() < 1 {
			t.Fatal("the token source was not called")
		}
	})

	unauthorized := func(t *testing.T, auth conn.Auth) {
		t.Helper()
		c := newClient(t, srv, auth, clientOpts{})
		cctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		err := c.Connect(cctx)
		var ue *conn.UpgradeError
		if !errors.Is(err, conn.ErrUnauthorized) || !errors.As(err, &ue) || ue.StatusCode != 401 {
			t.Fatalf("Connect: %v, want an *UpgradeError with status 401", err)
		}
	}
	t.Run("bad token", func(t *testing.T) {
		unauthorized(t, conn.Auth{Mode: conn.AuthStrict, Token: "not-a-valid-token"})
	})
	t.Run("no token", func(t *testing.T) {
		// The library refuses strict mode without a token before dialing…
		_, err := manager.New(&conn.Config{URL: srv.URL(), Auth: conn.Auth{Mode: conn.AuthStrict}}, nil)
		var ce *protocol.ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("manager.New in strict mode without a token: %v, want a *protocol.ConfigError", err)
		}
		// … and a client that does not put the token in the URL (handshake
		// mode) gets the server's 401.
		unauthorized(t, conn.Auth{Mode: conn.AuthHandshake, Token: tg.Creds().AdminToken})
	})
}

// Q1-Q4, P1: public mode. Unauthenticated connections are the Public role:
// a subscription to posts is FORBIDDEN, an event-only one is accepted and
// then gets a FORBIDDEN per event, routed to it; authentication upgrades
// the connection.
func TestPublicMode(t *testing.T) { run(t, scenarioPublicMode) }

func scenarioPublicMode(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Public)
	seeded := seedPost(ctx, t, srv, "public")
	rest := srv.REST()

	anon := connect(ctx, t, srv, conn.Auth{Mode: conn.AuthPublic}, clientOpts{})
	for _, f := range anon.wire.Frames(0) {
		if f.Out && f.Type == protocol.TypeAuth {
			t.Fatal("an unauthenticated public client sent an auth frame")
		}
	}

	// Q1: FORBIDDEN, returned by Subscribe, which leaves nothing behind.
	_, err := anon.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", UID: "all"}, newRecorder())
	var se *protocol.ServerError
	if !isForbidden(err) || !errors.As(err, &se) || se.UID != "all" {
		t.Fatalf("Subscribe to posts as Public: %v, want FORBIDDEN for uid all", err)
	}
	if subs := anon.ActiveSubscriptions(); len(subs) != 0 {
		t.Fatalf("a refused Subscribe left %d subscriptions", len(subs))
	}

	// Q2: an event-only subscription skips the permission check; each
	// event then arrives as a FORBIDDEN error for that subscription.
	creates := newRecorder()
	sub, err := anon.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Event: protocol.EventCreate, UID: "creates"}, creates)
	must(t, err)
	if ev := creates.expect(ctx, t, handlers.KindInit); ev.Data != nil {
		t.Fatalf("event-only init carries data %s", ev.Data)
	}
	_, err = rest.CreatePost(ctx, Post{Title: "while public", Status: "published"})
	must(t, err)
	ev := creates.expect(ctx, t, handlers.KindError)
	if !isForbidden(ev.Err) || ev.UID != "creates" {
		t.Fatalf("per-event error %v for %q, want FORBIDDEN for creates", ev.Err, ev.UID)
	}
	if s := sub.State(); s != manager.StateActive {
		t.Fatalf("the subscription is %s after a per-event error, want active", s)
	}

	// R8: deletes carry keys without a permission check, so the Public
	// role gets them, unless the query asks for meta, which Directus then
	// fails to compute: FORBIDDEN instead of the delete.
	deletes, deletesMeta := newRecorder(), newRecorder()
	_, err = anon.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Event: protocol.EventDelete, UID: "deletes"}, deletes)
	must(t, err)
	deletes.expect(ctx, t, handlers.KindInit)
	_, err = anon.Subscribe(ctx, manager.SubscribeOptions{Collection: "posts", Event: protocol.EventDelete, UID: "deletes-meta",
		Query: &protocol.Query{Meta: "total_count"}}, deletesMeta)
	must(t, err)
	deletesMeta.expect(ctx, t, handlers.KindInit)
	must(t, rest.DeletePost(ctx, seeded.ID))
	ev = deletes.expect(ctx, t, handlers.KindDelete)
	checkKeys(t, ev, seeded.ID)
	if ev := deletesMeta.expect(ctx, t, handlers.KindError); !isForbidden(ev.Err) {
		t.Fatalf("delete with meta as Public: %v, want FORBIDDEN", ev.Err)
	}
	seeded, err = rest.CreatePost(ctx, Post{Title: "public again", Status: "published", Views: 1})
	must(t, err)
	creates.expect(ctx, t, handlers.KindError)

	// An authenticated public-mode client is the admin from the start.
	t.Run("authenticated", func(t *testing.T) {
		c := connect(ctx, t, srv, conn.Auth{Mode: conn.AuthPublic, Token: tg.Creds().AdminToken}, clientOpts{})
		actsAsAdmin(ctx, t, c, seeded)
	})

	// A failed auth is typed; Directus would keep the socket as Public
	// (Q3), the library reports the refusal instead of going on as Public.
	t.Run("bad token", func(t *testing.T) {
		c := newClient(t, srv, conn.Auth{Mode: conn.AuthPublic, Token: "not-a-valid-token"}, clientOpts{})
		cctx, cancel := within(ctx, eventTimeout)
		defer cancel()
		if err := c.Connect(cctx); !errors.Is(err, protocol.ErrAuthFailed) {
			t.Fatalf("Connect: %v, want AUTH_FAILED", err)
		}
	})

	// Q4: an auth frame on the open connection upgrades it, and the
	// event-only subscription made as Public starts delivering. Directus
	// handles frames concurrently, so the first writes after the auth frame
	// may still meet the Public role.
	must(t, anon.SendMessage(ctx, protocol.AuthMessage{AccessToken: tg.Creds().AdminToken, UID: "upgrade"}))
	for i := 0; ; i++ {
		p, err := rest.CreatePost(ctx, Post{Title: fmt.Sprintf("after auth %d", i), Status: "published"})
		must(t, err)
		ev := creates.next(ctx, t)
		if ev.Kind == handlers.KindError && isForbidden(ev.Err) && i < 20 {
			continue
		}
		items, err := handlers.Items[Post](ev)
		if ev.Kind != handlers.KindCreate || err != nil || len(items) != 1 || items[0].ID != p.ID {
			t.Fatalf("after auth: %s event %s (%v), want the create of %d", ev.Kind, ev.Data, ev.Err, p.ID)
		}
		break
	}
}

// P1-P3: a non-admin identity (the seeded reader: read on posts, nothing
// on tags).
func TestPermissions(t *testing.T) { run(t, scenarioPermissions) }

func scenarioPermissions(t *testing.T, tg Target) {
	ctx := scenarioCtx(t)
	srv := tg.Server(t, Default)
	if tg.Creds().ReaderToken == "" {
		missing(t, loadRealEnv(), "DIRECTUS_READER_TOKEN is not set")
	}
	seeded := seedPost(ctx, t, srv, "permissions")
	c := connect(ctx, t, srv, conn.Auth{Token: tg.Creds().ReaderToken}, clientOpts{})

	// Read on posts: the replica works.
	actsAsAdmin(ctx, t, c, seeded)

	// P1: no read on tags: FORBIDDEN.
	if _, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "tags", UID: "tags"}, newRecorder()); !isForbidden(err) {
		t.Fatalf("Subscribe to tags as the reader: %v, want FORBIDDEN", err)
	}
	// P2: event-only is accepted, then FORBIDDEN per event.
	rec := newRecorder()
	_, err := c.Subscribe(ctx, manager.SubscribeOptions{Collection: "tags", Event: protocol.EventCreate, UID: "tag-creates"}, rec)
	must(t, err)
	rec.expect(ctx, t, handlers.KindInit)
	_, err = srv.REST().CreateTag(ctx, "by the admin")
	must(t, err)
	if ev := rec.expect(ctx, t, handlers.KindError); !isForbidden(ev.Err) || ev.UID != "tag-creates" {
		t.Fatalf("per-event error %v for %q, want FORBIDDEN for tag-creates", ev.Err, ev.UID)
	}
	// P3: no create permission over WebSocket items either.
	_, err = c.Items(ctx, protocol.ItemsMessage{Collection: "posts", Action: protocol.ActionCreate, Data: Post{Title: "by the reader"}})
	if !isForbidden(err) {
		t.Fatalf("items create as the reader: %v, want FORBIDDEN", err)
	}
}
