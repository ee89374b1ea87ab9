package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/internal/browser"
)

// The page in a real browser: headless Chromium opens it, its EventSource
// subscribes, a write on the server shows up in the page's text, and when
// the browser closes, the subscription ends.
//
// The test talks to Chromium over the DevTools protocol (internal/browser):
// Runtime.evaluate waits in the page, with a MutationObserver, until the
// text of the write appears.
func TestBrowser(t *testing.T) {
	browser.Require(t)
	a := startApp(t)
	start := time.Now()
	phase := func(what string) { t.Logf("%-40s after %v", what, time.Since(start).Round(time.Millisecond)) }
	ctx, cancel := context.WithTimeout(t.Context(), 4*waitLimit)
	defer cancel()

	br := browser.Start(t, a.base+"/?collection=posts", 2*waitLimit)

	// The page's EventSource made its subscription.
	uid := waitUID(t, a.started, "subscription of the page's stream")
	phase("the page subscribed")
	if uids := a.activeUIDs(t); len(uids) != 1 || uids[0] != uid {
		t.Fatalf("active subscriptions %v, want [%s]", uids, uid)
	}

	// A write on the server must appear in the page.
	title := fmt.Sprintf("seen by chromium %d", time.Now().UnixNano())
	if _, err := a.srv.Create("posts", map[string]any{"title": title, "status": "published", "views": 0}); err != nil {
		t.Fatal(err)
	}
	page := br.Page(ctx, t, a.base)
	text := page.WaitText(ctx, t, title, waitLimit)
	phase("the page shows the write")
	t.Logf("the page shows:\n%s", text)
	flat := strings.Join(strings.Fields(text), " ") // innerText collapses spaces
	for _, want := range []string{"Stream: live", "subscription " + uid, "subscribed: 0 rows", `create #1 "` + title + `" published`} {
		if !strings.Contains(flat, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	page.Close()

	// The browser closes: its connections go, the request's context ends,
	// and the subscription with it.
	br.Close(ctx, t)
	phase("chromium exited")
	if got := waitUID(t, a.ended, "end of the page's subscription"); got != uid {
		t.Fatalf("ended %s, want %s", got, uid)
	}
	phase("the subscription ended")
	if uids := a.activeUIDs(t); len(uids) != 0 {
		t.Fatalf("active subscriptions after the browser closed: %v", uids)
	}
}
