package main

import (
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/e41af43e/directus-realtime/directustest"
	"github.com/e41af43e/directus-realtime/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var navigated = regexp.MustCompile(`msg=navigated page=(\S+) ended=(\d+) active="\[global-notifications ([^\]]*)\]"`)

// Each navigation ends the previous page's subscriptions (UnsubscribeAll),
// the persistent one stays, and the notification created after it is
// delivered; after a server restart it is restored and delivers again.
func TestRun(t *testing.T) {
	var out testutil.Buffer
	if err := run(t.Context(), config{Pages: 6}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	pagesSeen := 0
	for i, line := range lines {
		m := navigated.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pagesSeen++
		// The previous page's subscriptions ended: 0 on the first page, as
		// many as that page made afterwards.
		want := "0"
		if pagesSeen > 1 {
			want = []string{"1", "1", "2"}[(pagesSeen-2)%3]
		}
		if m[2] != want {
			t.Errorf("navigation %d ended %s subscriptions, want %s: %s", pagesSeen, m[2], want, line)
		}
		// The persistent subscription delivers right after.
		wantNote := `msg=notification subject="notification ` + string(rune('0'+pagesSeen)) + `, on ` + m[1] + `"`
		if i+1 >= len(lines) || !strings.Contains(lines[i+1], wantNote) {
			t.Errorf("after %q no %q", line, wantNote)
		}
	}
	if pagesSeen != 6 {
		t.Fatalf("%d navigations, want 6:\n%s", pagesSeen, out.String())
	}
	for _, want := range []string{
		`msg="notifications restored after a reconnect"`,
		`msg=notification subject="after the restart"`,
		`msg="ok: every notification delivered" created=7 delivered=7 lost=0`,
		`msg="left the app" page_subscriptions_unsubscribed=2 still_active=[global-notifications]`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
}

// Against a "real" server (-url): the notifications are created over the
// WebSocket in the existing collection; no restart.
func TestRemote(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	if err := srv.AddCollection(directustest.Collection{Name: "alerts", Fields: []string{"id", "subject"}}); err != nil {
		t.Fatal(err)
	}
	var out testutil.Buffer
	err := run(t.Context(), config{URL: srv.URL(), Token: directustest.AdminToken, Collection: "alerts", Pages: 3}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if n := len(srv.Items("alerts")); n != 3 {
		t.Fatalf("%d alerts on the server, want 3", n)
	}
	if !strings.Contains(out.String(), `msg="ok: every notification delivered" created=3 delivered=3 lost=0`) {
		t.Fatalf("output:\n%s", out.String())
	}
}

// A collection that does not exist: Directus skips the permission check for
// event-only subscriptions, so the subscribe succeeds and it is the first
// create that fails, with the error run returns.
func TestMissingCollection(t *testing.T) {
	srv := directustest.NewServer(nil)
	defer srv.Close()
	var out testutil.Buffer
	err := run(t.Context(), config{URL: srv.URL(), Token: directustest.AdminToken, Collection: "nope", Pages: 1}, &out)
	if err == nil || !strings.Contains(err.Error(), "create a notification") {
		t.Fatalf("run = %v\n%s", err, out.String())
	}
}
