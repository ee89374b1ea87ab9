package ops_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/browser"
	"github.com/e41af43e/directus-realtime/internal/opstest"
	"github.com/e41af43e/directus-realtime/ops"
)

const waitLimit = 20 * time.Second

// The status page in a real browser: headless Chromium loads it, it shows
// the replica's subscription, and it updates when an event arrives.
func TestStatusPageInChromium(t *testing.T) {
	browser.Require(t)
	e := opstest.Start(t, nil)
	mux := http.NewServeMux()
	mux.Handle("/debug/directus/", http.StripPrefix("/debug/directus", e.Src.StatusHandler(&ops.StatusOptions{Interval: 100 * time.Millisecond})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitLimit)
	defer cancel()

	url := srv.URL + "/debug/directus/"
	br := browser.Start(t, url, 2*waitLimit)
	page := br.Page(ctx, t, url)
	defer page.Close()
	text := page.WaitText(ctx, t, "posts-replica", waitLimit)
	flat := strings.Join(strings.Fields(text), " ")
	for _, want := range []string{"Stream: live", "state connected", "posts posts posts-replica persistent active", "synced"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the page does not show %q:\n%s", want, text)
		}
	}
	for _, secret := range []string{opstest.Secret, directustest.ReaderPassword} {
		if strings.Contains(text, secret) {
			t.Errorf("the page shows the secret %q", secret)
		}
	}

	e.Create(t, "seen by chromium")
	want := fmt.Sprintf("events handled: %d", e.Src.Snapshot().Events)
	text = page.WaitText(ctx, t, want, waitLimit)
	t.Logf("the page shows:\n%s", text)
	br.Close(ctx, t)
}
