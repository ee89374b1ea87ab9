package conn

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/e41af43e/directus-realtime/protocol"
)

func TestWebsocketURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8055":          "ws://127.0.0.1:8055/websocket",
		"http://127.0.0.1:8055/":         "ws://127.0.0.1:8055/websocket",
		"https://cms.example.com/api/":   "wss://cms.example.com/api/websocket",
		"ws://127.0.0.1:8055/websocket":  "ws://127.0.0.1:8055/websocket",
		"wss://cms.example.com/realtime": "wss://cms.example.com/realtime",
	} {
		u, err := websocketURL(in)
		if err != nil || u.String() != want {
			t.Errorf("%s: got %v, %v; want %s", in, u, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://x", "http://", "http://u:p@x", "ws://x/websocket?access_token=t", "::"} {
		cfg := Config{URL: bad}
		if _, err := cfg.validate(); !errors.As(err, new(*protocol.ConfigError)) {
			t.Errorf("%q: err = %v, want *ConfigError", bad, err)
		}
	}
}

func TestAuthValidate(t *testing.T) {
	good := []Auth{
		{},
		{Token: "t"},
		{Mode: AuthStrict, Token: "t"},
		{Email: "e", Password: "p"},
		{RefreshToken: "r"},
		{Mode: AuthPublic, Token: "t"},
	}
	for _, a := range good {
		if err := a.validate(); err != nil {
			t.Errorf("%v: %v", a, err)
		}
	}
	bad := []Auth{
		{Mode: AuthHandshake},
		{Mode: AuthStrict, Email: "e", Password: "p"},
		{Email: "e"},
		{Mode: "sometimes", Token: "t"},
	}
	for _, a := range bad {
		if err := a.validate(); err == nil {
			t.Errorf("%v: accepted", a)
		}
	}
	if (Auth{}).mode() != AuthPublic || (Auth{Token: "t"}).mode() != AuthHandshake {
		t.Error("default modes")
	}
}

func jwtWith(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + ".sig"
}

func TestRefreshAt(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := newCredentials(Auth{TokenSource: nil, Token: "static"})
	if at := c.refreshAt(now, now.Add(time.Hour)); !at.IsZero() {
		t.Errorf("a fixed token cannot be refreshed, got %v", at)
	}
	c = newCredentials(Auth{RefreshToken: "r"})
	if at := c.refreshAt(now, now.Add(15*time.Minute)); !at.Equal(now.Add(14 * time.Minute)) {
		t.Errorf("15m JWT: refresh at %v, want 1m before exp", at.Sub(now))
	}
	if at := c.refreshAt(now, now.Add(15*time.Second)); !at.Equal(now.Add(12 * time.Second)) {
		t.Errorf("15s JWT: refresh at %v, want 3s before exp", at.Sub(now))
	}
	if at := c.refreshAt(now, time.Time{}); !at.IsZero() {
		t.Errorf("unknown lifetime: %v", at)
	}
	if at := c.refreshAt(now, now.Add(800*time.Millisecond)); !at.Equal(now.Add(400 * time.Millisecond)) {
		t.Errorf("nearly expired token: refresh at %v, want halfway", at.Sub(now))
	}
	if at := c.refreshAt(now, now.Add(-time.Second)); at.After(now) {
		t.Errorf("expired token: refresh at %v", at.Sub(now))
	}
	c.learnTTL(10 * time.Second)
	if at := c.refreshAt(now, time.Time{}); !at.Equal(now.Add(8 * time.Second)) {
		t.Errorf("learned 10s: refresh at %v", at.Sub(now))
	}
	// A TOKEN_EXPIRED a few milliseconds after an auth (an early expiry)
	// must not become the lifetime: refreshing every few milliseconds would
	// follow, for good.
	c.learnTTL(3 * time.Millisecond)
	if at := c.refreshAt(now, time.Time{}); !at.Equal(now.Add(8 * time.Second)) {
		t.Errorf("after an early expiry: refresh at %v, want the 10s lifetime kept", at.Sub(now))
	}
	c = newCredentials(Auth{Email: "a@b.c", Password: "p"})
	c.learnTTL(40 * time.Millisecond)
	if at := c.refreshAt(now, time.Time{}); !at.IsZero() {
		t.Errorf("learned only an early expiry: refresh at %v, want none", at.Sub(now))
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{}
	for n := 0; n < 40; n++ {
		d := b.Delay(n)
		want := min(DefaultBackoffInitial*time.Duration(1<<min(n, 20)), DefaultBackoffMax)
		if d > want || d < want/2 {
			t.Fatalf("Delay(%d) = %v, want in [%v, %v]", n, d, want/2, want)
		}
	}
	exact := Backoff{Initial: time.Second, Max: 5 * time.Second, Factor: 3, Jitter: -1}
	for n, want := range []time.Duration{time.Second, 3 * time.Second, 5 * time.Second, 5 * time.Second} {
		if d := exact.Delay(n); d != want {
			t.Errorf("no jitter Delay(%d) = %v, want %v", n, d, want)
		}
	}
}

func TestDialErrorRedactsToken(t *testing.T) {
	inner := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	err := fmt.Errorf(`failed to WebSocket dial: Get "ws://h/websocket?access_token=s3cret": %w`, inner)
	de := newDialError("ws://h/websocket", err, "s3cret")
	if strings.Contains(de.Error(), "s3cret") {
		t.Fatalf("token in %q", de.Error())
	}
	var op *net.OpError
	if !errors.As(de, &op) {
		t.Fatal("net.OpError not reachable")
	}
	for _, e := range de.Unwrap() {
		if strings.Contains(e.Error(), "s3cret") {
			t.Fatalf("token in cause %q", e.Error())
		}
	}
}

func TestCredentialsNeverPrinted(t *testing.T) {
	a := Auth{Token: "s3cret-token", Email: "e@x", Password: "s3cret-pass", RefreshToken: "s3cret-refresh"}
	cfg := Config{URL: "http://x", Auth: a}
	for _, s := range []string{
		a.String(), a.GoString(), a.LogValue().String(),
		sprintf("%v", a), sprintf("%+v", a), sprintf("%#v", a), sprintf("%v", cfg), sprintf("%+v", cfg),
	} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("credential printed: %s", s)
		}
	}
}
