package manager_test

import (
	"errors"
	"testing"

	"github.com/e41af43e/directus-realtime/conn"
	"github.com/e41af43e/directus-realtime/manager"
	"github.com/e41af43e/directus-realtime/protocol"
)

// TestRequest: a custom frame gets the reply that echoes its uid.
func TestRequest(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	reply, err := e.m.Request(ctx(t), map[string]any{"type": "ping", "uid": "mine"})
	if err != nil || reply.Type != protocol.TypePong || reply.UID == "mine" || reply.UID == "" {
		t.Fatalf("ping: %+v, %v (want a pong with the request's fresh uid)", reply, err)
	}
	reply, err = e.m.Request(ctx(t), map[string]any{"type": "items", "collection": "posts", "action": "read"})
	if err != nil || reply.Type != protocol.TypeItems || string(reply.Data) != "[]" {
		t.Fatalf("items read: %+v, %v", reply, err)
	}
	_, err = e.m.Request(ctx(t), map[string]any{"type": "items", "collection": "directus_users", "action": "read"})
	var se *protocol.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("items on a system collection: %v, want a server error", err)
	}
}

// TestRequestRefusals: mistakes are said in the caller's terms.
func TestRequestRefusals(t *testing.T) {
	e := setup(t, nil, conn.Auth{})
	var ce *protocol.ConfigError
	for _, msg := range []any{"hello", nil, map[string]any{"no": "type"}, map[string]any{"type": 1}, map[string]any{"type": "auth", "access_token": "x"}} {
		if _, err := e.m.Request(ctx(t), msg); !errors.As(err, &ce) {
			t.Errorf("Request(%#v): %v, want a ConfigError", msg, err)
		}
	}
	if err := e.m.SendMessage(ctx(t), "hello"); !errors.As(err, &ce) || ce.Reason != `must be a JSON object with a "type", not a string` {
		t.Errorf(`SendMessage("hello"): %v`, err)
	}
	for _, typ := range []string{protocol.TypeSubscribe, protocol.TypeUnsubscribe} {
		if _, err := e.m.Request(ctx(t), map[string]any{"type": typ}); !errors.Is(err, manager.ErrRefused) {
			t.Errorf("Request(%s): %v, want ErrRefused", typ, err)
		}
	}
}
