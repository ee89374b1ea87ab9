package directustest

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
)

// uidVal is a message uid as the client sent it: a string or a number.
type uidVal struct {
	set   bool
	isNum bool
	str   string
	num   float64
}

// appendJSON writes the uid with its JSON type (as JSON.stringify would
// after JSON.parse).
func (u uidVal) appendJSON(b []byte) []byte {
	if u.isNum {
		return append(b, jsNumber(u.num)...)
	}
	return appendJSONString(b, u.str)
}

// String is JavaScript's String(uid), used for subscription uids.
func (u uidVal) String() string {
	if u.isNum {
		return jsNumber(u.num)
	}
	return u.str
}

// stringUID is the uid of a subscription: always a string.
func stringUID(s string, set bool) uidVal {
	return uidVal{set: set, str: s}
}

// inMsg is a parsed inbound frame that passed the base schema: a JSON
// object with a string "type" and an optional string or number "uid".
type inMsg struct {
	raw map[string]json.RawMessage
	typ string
	uid uidVal
}

// parseInbound applies the base message schema. Errors carry the exact
// messages of Directus (docs/PROTOCOL.md §9, M1–M3).
func parseInbound(data []byte) (*inMsg, *dxError) {
	if !json.Valid(data) {
		return nil, errInvalidPayload(msgUnparsable)
	}
	if t := jsTypeOf(data); t != "object" {
		return nil, errValidation(issueExpected("object", t, ""))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, errInvalidPayload(msgUnparsable)
	}
	m := &inMsg{raw: raw}
	var issues []string
	if t, ok := raw["type"]; !ok {
		issues = append(issues, issueExpected("string", "undefined", "type"))
	} else if jsTypeOf(t) != "string" {
		issues = append(issues, issueExpected("string", jsTypeOf(t), "type"))
	} else {
		_ = json.Unmarshal(t, &m.typ)
	}
	if u, ok := raw["uid"]; ok {
		v, issue := parseStringOrNumber(u, "uid")
		if issue != "" {
			issues = append(issues, issue)
		} else {
			m.uid = v
		}
	}
	if len(issues) > 0 {
		return nil, errValidation(joinIssues(issues))
	}
	return m, nil
}

// parseStringOrNumber decodes a zod string|number union member.
func parseStringOrNumber(raw json.RawMessage, path string) (uidVal, string) {
	switch jsTypeOf(raw) {
	case "string":
		var s string
		_ = json.Unmarshal(raw, &s)
		return uidVal{set: true, str: s}, ""
	case "number":
		f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
		if err == nil && !math.IsInf(f, 0) {
			return uidVal{set: true, isNum: true, num: f}, ""
		}
	}
	t := jsTypeOf(raw)
	return uidVal{}, issueExpected("string", t, path) + " or " + issueExpected("number", t, path)
}

func joinIssues(issues []string) string {
	var b bytes.Buffer
	for i, s := range issues {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// Outbound frames. Field order follows the transcript: type, status/event,
// then error/data/meta, and uid last (refresh_token after uid on auth).

var framePing = []byte(`{"type":"ping"}`)

func frameAuthOK(uid uidVal, refreshToken string) []byte {
	b := append(make([]byte, 0, 128), `{"type":"auth","status":"ok"`...)
	if uid.set {
		b = append(b, `,"uid":`...)
		b = uid.appendJSON(b)
	}
	if refreshToken != "" {
		b = append(b, `,"refresh_token":`...)
		b = appendJSONString(b, refreshToken)
	}
	return append(b, '}')
}

func frameError(typ, code, message string, uid uidVal) []byte {
	b := append(make([]byte, 0, 160), `{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"status":"error","error":{"code":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	b = append(b, '}')
	if uid.set {
		b = append(b, `,"uid":`...)
		b = uid.appendJSON(b)
	}
	return append(b, '}')
}

func frameDXError(typ string, err *dxError, uid uidVal) []byte {
	return frameError(typ, err.code, err.message, uid)
}

func framePong(uid uidVal) []byte {
	b := append(make([]byte, 0, 48), `{"type":"pong"`...)
	if uid.set {
		b = append(b, `,"uid":`...)
		b = uid.appendJSON(b)
	}
	return append(b, '}')
}

// subscriptionFrame assembles {"type":"subscription","event":E[,"data":D][,"meta":M][,"uid":"U"]}.
// data and meta are raw JSON (nil to omit).
func subscriptionFrame(event string, data, meta []byte, uid uidVal) []byte {
	b := make([]byte, 0, 48+len(data)+len(meta)+len(uid.str))
	b = append(b, `{"type":"subscription","event":"`...)
	b = append(b, event...)
	b = append(b, '"')
	if data != nil {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	if meta != nil {
		b = append(b, `,"meta":`...)
		b = append(b, meta...)
	}
	if uid.set {
		b = append(b, `,"uid":`...)
		b = appendJSONString(b, uid.String())
	}
	return append(b, '}')
}

// itemsFrame assembles {"type":"items","data":D[,"meta":M][,"uid":U]}.
func itemsFrame(data, meta []byte, uid uidVal) []byte {
	b := make([]byte, 0, 32+len(data)+len(meta))
	b = append(b, `{"type":"items","data":`...)
	b = append(b, data...)
	if meta != nil {
		b = append(b, `,"meta":`...)
		b = append(b, meta...)
	}
	if uid.set {
		b = append(b, `,"uid":`...)
		b = uid.appendJSON(b)
	}
	return append(b, '}')
}
