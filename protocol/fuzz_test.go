package protocol_test

// Fuzz targets for the decoding of inbound frames. Run them with
// scripts/fuzz.sh, or one at a time:
//
//	go test -run '^$' -fuzz '^FuzzDecodeMessage$' -fuzztime 60s ./conn
//
// Every target is seeded with every frame of the recorded transcripts
// (server and client frames, SQLite and PostgreSQL), so plain `go test`
// checks the properties on all of them.

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/e41af43e/directus-realtime/internal/testutil"
	"github.com/e41af43e/directus-realtime/internal/transcript"
	"github.com/e41af43e/directus-realtime/protocol"
)

// transcriptFrames returns every WebSocket frame of both transcripts.
func transcriptFrames() []string {
	var out []string
	for _, steps := range [][]transcript.Step{transcript.SQLite(), transcript.Postgres()} {
		out = append(out, transcript.ServerFrames(steps)...)
		out = append(out, transcript.ClientFrames(steps)...)
	}
	return out
}

// wireKeys are the keys DecodeMessage reads.
var wireKeys = []string{"type", "event", "status", "uid", "data", "meta", "error", "refresh_token"}

func FuzzDecodeMessage(f *testing.F) {
	for _, fr := range transcriptFrames() {
		f.Add([]byte(fr))
	}
	for _, fr := range []string{
		``, `null`, `[]`, `"auth"`, `{}`, `{"type":null}`, `{"type":7}`,
		`{"type":"subscription"}`, `{"type":"subscription","event":null}`,
		`{"type":"auth","status":"error"}`, `{"type":"auth","status":"error","error":null}`,
		`{"type":"auth","status":"error","error":"AUTH_FAILED"}`,
		`{"type":"items","uid":{"a":1}}`, `{"type":"items","uid":true}`, `{"type":"pong","uid":-1.5e3}`,
		`{"type":"items","data":null,"meta":null}`, `{"type":"no-such-type","data":5,"status":7}`,
		`{"type":"auth","status":"ok","refresh_token":5}`, `{"TYPE":"ping","Uid":"x"}`,
		`{"type":"ping","type":"pong"}`, "{\"type\":\"items\",\"uid\":\"\xff\"}",
	} {
		f.Add([]byte(fr))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.DecodeMessage(b)
		if err != nil {
			checkDecodeError(t, b, m, err)
			return
		}
		checkMessage(t, b, m)
	})
}

func checkDecodeError(t *testing.T, b []byte, m *protocol.Message, err error) {
	t.Helper()
	if m != nil {
		t.Fatalf("DecodeMessage returned a message and the error %v", err)
	}
	var pe *protocol.ProtocolError
	if !errors.As(err, &pe) {
		t.Fatalf("error %T %v is not a *ProtocolError", err, err)
	}
	if !errors.Is(err, protocol.ErrProtocol) {
		t.Fatalf("error %v does not match ErrProtocol", err)
	}
	if pe.Size != len(b) {
		t.Fatalf("ProtocolError.Size = %d for a %d-byte frame", pe.Size, len(b))
	}
	if pe.Reason == "" || !strings.HasPrefix(err.Error(), "directus: protocol error: ") {
		t.Fatalf("unhelpful error %q", err.Error())
	}
	// A frame the reference decoding finds usable must not be rejected.
	if ref, ok := reference(b); ok && ref.usable {
		t.Fatalf("rejected a usable frame: %v", err)
	}
}

func checkMessage(t *testing.T, b []byte, m *protocol.Message) {
	t.Helper()
	if m == nil {
		t.Fatal("DecodeMessage returned neither a message nor an error")
	}
	if !json.Valid(b) || firstByte(b) != '{' {
		t.Fatal("accepted a frame that is not a JSON object")
	}
	// Self-consistency.
	if (m.Status == "error") != (m.Err != nil) {
		t.Fatalf("Status %q with Err %v", m.Status, m.Err)
	}
	if m.Err != nil {
		if m.Err.Type != m.Type || m.Err.UID != m.UID {
			t.Fatalf("ServerError %+v does not match its frame (type %q, uid %q)", *m.Err, m.Type, m.UID)
		}
		if !errors.Is(m.Err, &protocol.ServerError{Code: m.Err.Code}) {
			t.Fatalf("ServerError %v does not match its own code", m.Err)
		}
		_ = m.Err.Error()
	}
	if m.Type == protocol.TypeSubscription && m.Event == "" {
		t.Fatal("subscription frame accepted without event")
	}
	for name, raw := range map[string]json.RawMessage{"data": m.Data, "meta": m.Meta} {
		if raw == nil {
			continue
		}
		if !json.Valid(raw) || string(raw) == "null" {
			t.Fatalf("%s = %q: invalid JSON or null", name, raw)
		}
	}
	// String and LogValue never panic and never show the refresh token.
	s := m.String()
	_ = m.LogValue()
	if tok := m.RefreshToken; tok != "" {
		var code string
		if m.Err != nil {
			code = string(m.Err.Code)
		}
		shown := m.Type + m.Event + m.Status + string(m.UID) + code
		if !strings.Contains(shown, tok) && strings.Contains(s, tok) {
			t.Fatalf("String() = %q shows the refresh token", s)
		}
	}
	// Differential check against a plain map decoding of the same bytes.
	ref, ok := reference(b)
	if !ok {
		return
	}
	if !ref.usable {
		t.Fatalf("accepted a frame the reference rejects: %s", ref.why)
	}
	if m.Type != ref.typ || !bytes.Equal(m.Data, ref.data) || !bytes.Equal(m.Meta, ref.meta) {
		t.Fatalf("decoded type %q data %q meta %q, reference %q %q %q", m.Type, m.Data, m.Meta, ref.typ, ref.data, ref.meta)
	}
	if !ref.known {
		return
	}
	if m.Event != ref.event || m.Status != ref.status || m.UID != ref.uid || m.RefreshToken != ref.refresh {
		t.Fatalf("decoded %+v, reference %+v", m, ref)
	}
	if m.Err != nil && (string(m.Err.Code) != ref.code || m.Err.Message != ref.message) {
		t.Fatalf("decoded error %+v, reference code %q message %q", *m.Err, ref.code, ref.message)
	}
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// refMessage is what an independent, simpler decoding of a frame finds.
type refMessage struct {
	usable, known                              bool
	why                                        string
	typ, event, status, refresh, code, message string
	uid                                        protocol.UID
	data, meta                                 json.RawMessage
}

var knownTypes = map[string]bool{
	"auth": true, "subscription": true, "subscribe": true, "unsubscribe": true,
	"items": true, "ping": true, "pong": true, "server": true,
}

// reference decodes b through a map, following docs/PROTOCOL.md §4. ok is false
// when the comparison would be meaningless: encoding/json matches struct
// fields case-insensitively, so a frame with a key that differs from one
// of wireKeys only in case is decoded differently by design.
func reference(b []byte) (ref refMessage, ok bool) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return refMessage{why: "not a JSON object"}, true
	}
	for k := range obj {
		for _, w := range wireKeys {
			if k != w && strings.EqualFold(k, w) {
				return ref, false
			}
		}
	}
	str := func(key string, dst *string) bool {
		raw, present := obj[key]
		if !present || string(raw) == "null" {
			return true
		}
		return json.Unmarshal(raw, dst) == nil && raw[0] == '"'
	}
	nonNull := func(raw json.RawMessage) json.RawMessage {
		if string(raw) == "null" {
			return nil
		}
		return raw
	}
	ref.data, ref.meta = nonNull(obj["data"]), nonNull(obj["meta"])
	rawType, present := obj["type"]
	if !present {
		ref.why = "no type"
		return ref, true
	}
	if rawType[0] != '"' || json.Unmarshal(rawType, &ref.typ) != nil {
		ref.why = "type not a string"
		return ref, true
	}
	if !knownTypes[ref.typ] {
		ref.usable = true
		return ref, true
	}
	ref.known = true
	if !str("event", &ref.event) || !str("status", &ref.status) || !str("refresh_token", &ref.refresh) {
		ref.why = "event, status or refresh_token not a string"
		return ref, true
	}
	if raw, present := obj["uid"]; present {
		switch {
		case string(raw) == "null":
		case raw[0] == '"':
			var s string
			_ = json.Unmarshal(raw, &s)
			ref.uid = protocol.UID(s)
		case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
			ref.uid = protocol.UID(raw) // a number keeps its text
		default:
			ref.why = "uid neither string nor number"
			return ref, true
		}
	}
	if ref.typ == "subscription" && ref.event == "" {
		ref.why = "subscription without event"
		return ref, true
	}
	if ref.status == "error" {
		raw, present := obj["error"]
		if !present || string(raw) == "null" {
			ref.why = "error frame without error"
			return ref, true
		}
		var e struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &e) != nil {
			ref.why = "error of the wrong shape"
			return ref, true
		}
		ref.code, ref.message = e.Code, e.Message
	}
	ref.usable = true
	return ref, true
}

func FuzzUIDUnmarshal(f *testing.F) {
	// Every uid of the transcripts, as raw JSON.
	for _, fr := range transcriptFrames() {
		var obj map[string]json.RawMessage
		if json.Unmarshal([]byte(fr), &obj) == nil && obj["uid"] != nil {
			f.Add([]byte(obj["uid"]))
		}
	}
	for _, s := range []string{
		`null`, `0`, `-0`, `42`, `-7`, `1.5e3`, `1e999`, `""`, `"42"`, `"\u00e9\ud83d\ude00"`, `"\ud800"`,
		`true`, `false`, `{}`, `[]`, `[1]`, `{"uid":1}`, `-`, `01`, `1.`, `"unterminated`, ` 42 `, ` "x"`, `nul`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The path encoding/json takes (it trims the whitespace around a
		// value before calling UnmarshalJSON).
		var viaJSON protocol.UID
		errJSON := json.Unmarshal(b, &viaJSON)
		trimmed := bytes.TrimSpace(b)
		kind := testutil.JSONKind(b)
		switch kind {
		case "string":
			var s string
			_ = json.Unmarshal(b, &s)
			if errJSON != nil || viaJSON != protocol.UID(s) {
				t.Fatalf("string %q: uid %q, %v; want %q", b, viaJSON, errJSON, s)
			}
		case "number":
			if errJSON != nil || viaJSON != protocol.UID(trimmed) {
				t.Fatalf("number %q: uid %q, %v; want its text", b, viaJSON, errJSON)
			}
		case "null":
			if errJSON != nil || viaJSON != "" {
				t.Fatalf("null: uid %q, %v; want empty", viaJSON, errJSON)
			}
		default: // object, array, bool or not JSON at all
			if errJSON == nil {
				t.Fatalf("%s %q accepted as uid %q", kind, b, viaJSON)
			}
		}

		// Called directly, on a value without surrounding whitespace, it
		// agrees with the encoding/json path.
		var direct protocol.UID
		errDirect := direct.UnmarshalJSON(b)
		if len(trimmed) == len(b) && ((errDirect == nil) != (errJSON == nil) || direct != viaJSON) {
			t.Fatalf("UnmarshalJSON(%q) = %q, %v; json.Unmarshal gives %q, %v", b, direct, errDirect, viaJSON, errJSON)
		}

		// Round trip: a decoded uid, encoded again, decodes to itself.
		if errJSON == nil {
			again := roundTripUID(t, viaJSON)
			if again != viaJSON {
				t.Fatalf("uid %q came back as %q", viaJSON, again)
			}
		}
		// Round trip of any valid UTF-8 string sent as a uid.
		if s := string(b); utf8.ValidString(s) {
			if again := roundTripUID(t, protocol.UID(s)); again != protocol.UID(s) {
				t.Fatalf("string uid %q came back as %q", s, again)
			}
		}

		// A frame carrying this uid decodes to the same UID, or fails
		// exactly when the uid is rejected.
		if json.Valid(b) {
			frame := append(append([]byte(`{"type":"pong","uid":`), b...), '}')
			m, err := protocol.DecodeMessage(frame)
			if (err == nil) != (errJSON == nil) || (err == nil && m.UID != viaJSON) {
				t.Fatalf("pong frame with uid %q: %v, %v; UID alone: %q, %v", b, m, err, viaJSON, errJSON)
			}
		}
	})
}

// roundTripUID encodes u as the client would and decodes it again.
func roundTripUID(t *testing.T, u protocol.UID) protocol.UID {
	t.Helper()
	enc, err := json.Marshal(protocol.PingMessage{UID: u})
	if err != nil {
		t.Fatalf("encoding uid %q: %v", u, err)
	}
	var back struct {
		UID protocol.UID `json:"uid"`
	}
	if err := json.Unmarshal(enc, &back); err != nil {
		t.Fatalf("decoding %s: %v", enc, err)
	}
	return back.UID
}

// FuzzValidJSON holds the frame scanner's idea of valid JSON to
// encoding/json's: DecodeMessage validates with it alone.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `""`, `0`, `-0`, `01`, `1.`, `1.5e+3`, `1e`, `-`, `true`, `tru`, `nul`, `null `, ` {"a":1} `,
		`{"a":1,}`, `[1,]`, `{"a" 1}`, `{1:2}`, `"\u00e9"`, `"\u00g9"`, `"\x"`, "\"\x01\"", "\"\xff\"", `"\/\b\f\n\r\t\"\\"`,
		`{"type":"subscription","event":"create","data":[{"id":1,"t":"a,]}"}],"uid":"s"}`, `[[[[]]]]`, `{"a":[{"b":{}}]}x`,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000), strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := json.Valid(b)
		if got := protocol.ValidJSON(b); got != want {
			t.Fatalf("ValidJSON(%q) = %v, json.Valid %v", b, got, want)
		}
		if _, err := protocol.DecodeMessage(b); !want && err == nil {
			t.Fatalf("DecodeMessage(%q) accepted invalid JSON", b)
		}
	})
}
