package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/e41af43e/directus-realtime/internal/transcript"
)

func TestDecodeEveryRecordedServerFrame(t *testing.T) {
	for name, steps := range map[string][]transcript.Step{"sqlite": transcript.SQLite(), "postgres": transcript.Postgres()} {
		for _, f := range transcript.ServerFrames(steps) {
			m, err := DecodeMessage([]byte(f))
			if err != nil {
				t.Errorf("%s: %s: %v", name, f, err)
				continue
			}
			if m.Status == "error" && (m.Err == nil || m.Err.Code == "") {
				t.Errorf("%s: error frame decoded without code: %s", name, f)
			}
		}
	}
}

func TestDecodeShapes(t *testing.T) {
	cases := []struct {
		frame string
		check func(*Message) bool
	}{
		{`{"type":"subscription","event":"init","data":[],"uid":"42"}`, func(m *Message) bool {
			return m.Type == TypeSubscription && m.Event == EventInit && m.UID == "42" && string(m.Data) == "[]"
		}},
		{`{"type":"subscription","event":"init","uid":"creates"}`, func(m *Message) bool { return m.Data == nil }},
		{`{"type":"pong","uid":5}`, func(m *Message) bool { return m.UID == "5" }},
		{`{"type":"subscription","event":"delete","data":"1522","uid":"one"}`, func(m *Message) bool { return string(m.Data) == `"1522"` }},
		{`{"type":"auth","status":"ok","uid":7,"refresh_token":"rt"}`, func(m *Message) bool {
			return m.Status == "ok" && m.UID == "7" && m.RefreshToken == "rt" && !strings.Contains(m.String(), "rt\"")
		}},
		{`{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"no"},"uid":"e1"}`, func(m *Message) bool {
			return errors.Is(m.Err, ErrForbidden) && m.Err.UID == "e1" && m.Err.Type == "subscribe"
		}},
		{`{"type":"collab","event":{"weird":true},"uid":[1]}`, func(m *Message) bool { return m.Type == "collab" }},
		{`{"type":"items","data":null,"uid":"x"}`, func(m *Message) bool { return m.Data == nil }},
	}
	for _, c := range cases {
		m, err := DecodeMessage([]byte(c.frame))
		if err != nil {
			t.Errorf("%s: %v", c.frame, err)
			continue
		}
		if !c.check(m) {
			t.Errorf("%s: decoded as %+v", c.frame, m)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, f := range []string{
		``, `this is not json`, `{"type": "ping"`, `[1,2,3]`, `"just a string"`, `null`, `{}`,
		`{"uid":"no-type"}`, `{"type":5}`, `{"type":"pong","uid":{"a":1}}`, `{"type":"pong","uid":true}`,
		`{"type":"subscription","data":[]}`, `{"type":"subscription","event":3}`,
		`{"type":"auth","status":"error"}`, `{"type":"auth","status":"error","error":"AUTH_FAILED"}`,
		`{"type":"auth","status":"error","error":{"code":1}}`, `{"type":"auth","status":1}`,
	} {
		_, err := DecodeMessage([]byte(f))
		var pe *ProtocolError
		if !errors.As(err, &pe) || !errors.Is(err, ErrProtocol) {
			t.Errorf("%q: err = %v, want *ProtocolError", f, err)
		}
	}
}

func TestOutgoingFrames(t *testing.T) {
	cases := []struct {
		v    any
		want string
	}{
		{AuthMessage{AccessToken: "t", UID: "a"}, `{"type":"auth","access_token":"t","uid":"a"}`},
		{SubscribeMessage{Collection: "posts", UID: "pub", Query: &Query{Fields: []string{"id"}, Filter: map[string]any{"status": map[string]any{"_eq": "published"}}, Limit: -1}},
			`{"type":"subscribe","collection":"posts","query":{"fields":["id"],"filter":{"status":{"_eq":"published"}},"limit":-1},"uid":"pub"}`},
		{SubscribeMessage{Collection: "posts", Item: 1522, Event: EventUpdate}, `{"type":"subscribe","collection":"posts","event":"update","item":1522}`},
		{UnsubscribeMessage{UID: "x"}, `{"type":"unsubscribe","uid":"x"}`},
		{UnsubscribeMessage{All: true}, `{"type":"unsubscribe"}`},
		{ItemsMessage{Collection: "posts", Action: ActionDelete, IDs: []any{1, 2}, UID: "i"}, `{"type":"items","collection":"posts","action":"delete","ids":[1,2],"uid":"i"}`},
		{PingMessage{UID: "p"}, `{"type":"ping","uid":"p"}`},
		{Query{}, `{}`},
	}
	for _, c := range cases {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%#v: got %s, %v; want %s", c.v, b, err, c.want)
		}
	}
	if _, err := json.Marshal(UnsubscribeMessage{}); !errors.Is(err, ErrUnsubscribeAll) {
		t.Errorf("unsubscribe without uid: err = %v, want ErrUnsubscribeAll", err)
	}
	var q Query
	if err := json.Unmarshal([]byte(`{"fields":["id"],"limit":-1,"meta":"*"}`), &q); err != nil || q.Limit != -1 || q.Meta != "*" {
		t.Errorf("query round trip: %+v, %v", q, err)
	}
}

func TestCredentialsNeverPrinted(t *testing.T) {
	m := AuthMessage{AccessToken: "s3cret-token", Password: "s3cret-pass", RefreshToken: "s3cret-refresh"}
	for _, s := range []string{
		m.String(), m.GoString(), m.LogValue().String(),
		fmt.Sprintf("%v", m), fmt.Sprintf("%+v", m), fmt.Sprintf("%#v", m), fmt.Sprintf("%v", &m),
	} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("credential printed: %s", s)
		}
	}
}

// UnmarshalJSON called directly (not through json.Unmarshal, which
// validates first) refuses what its fast path for plain strings must not
// accept, and decodes the rest as json.Unmarshal does.
func TestUIDUnmarshalDirect(t *testing.T) {
	for _, in := range []string{`"abc`, `"a"b"`, `"`, "\"a\x01\""} {
		var u UID
		if err := u.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("%q: accepted as %q", in, u)
		}
	}
	for in, want := range map[string]UID{`"abc"`: "abc", `"a\"b"`: `a"b`, `"é"`: "é", "\"\xff\"": "\ufffd", `7`: "7"} {
		var u UID
		if err := u.UnmarshalJSON([]byte(in)); err != nil || u != want {
			t.Errorf("%q: %q, %v; want %q", in, u, err, want)
		}
	}
}

// EncodeClientFrame returns the frame and its type, or a *ConfigError that
// says in the sender's terms what is wrong.
func TestEncodeClientFrame(t *testing.T) {
	b, typ, err := EncodeClientFrame(map[string]any{"type": "ping", "uid": "u"})
	if err != nil || typ != "ping" || string(b) != `{"type":"ping","uid":"u"}` {
		t.Fatalf("ping: %s %q %v", b, typ, err)
	}
	for _, c := range []struct {
		msg  any
		want string
	}{
		{"hello", "must be a JSON object"},
		{`{"type":"ping"}`, "must be a JSON object"}, // a Go string is a JSON string
		{json.RawMessage(`[1]`), "must be a JSON object"},
		{json.RawMessage(`{"uid":"x"}`), `has no "type"`},
		{json.RawMessage(`{"type":5}`), `"type" is not a string`},
		{json.RawMessage(`{"type":"x"`), "does not marshal"},
		{func() {}, "does not marshal"},
	} {
		_, _, err := EncodeClientFrame(c.msg)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%T %v: err = %v, want a *ConfigError saying %q", c.msg, c.msg, err, c.want)
		}
	}
}
