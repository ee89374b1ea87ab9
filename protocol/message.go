package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/e41af43e/directus-realtime/internal/jsonskip"
	"log/slog"
	"time"
	"unicode/utf8"
)

// UID identifies a request or a subscription on one connection. The server
// accepts a string or a number and echoes it with the same JSON type on auth,
// pong, items and error replies, but always as a string on subscription
// frames (42 comes back as "42"). A UID holds the text in both cases, so the
// number 42 and the string "42" compare equal. The empty UID means "none".
type UID string

// UnmarshalJSON accepts a JSON string, a JSON number or null.
func (u *UID) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0:
		return errors.New("empty uid")
	case b[0] == '"':
		if s, ok := plainString(b); ok {
			// Every frame has a uid: a plain one (no escape, valid UTF-8,
			// as Directus and this package write them) skips
			// json.Unmarshal, a tenth of the envelope's cost.
			*u = UID(s)
			return nil
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*u = UID(s)
		return nil
	case string(b) == "null":
		*u = ""
		return nil
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*u = UID(n)
		return nil
	}
	return errors.New("uid is neither a string nor a number")
}

// Event kinds of subscription frames and of the subscribe "event" option.
const (
	EventInit        = "init"
	EventCreate      = "create"
	EventUpdate      = "update"
	EventDelete      = "delete"
	EventUnsubscribe = "unsubscribe"
)

// Actions of items requests.
const (
	ActionCreate = "create"
	ActionRead   = "read"
	ActionUpdate = "update"
	ActionDelete = "delete"
)

// Query is the Directus query of a subscription or an items request.
//
// On an items request every parameter applies. On a subscription Directus
// applies them differently to the init and to the events
// (docs/PROTOCOL.md §5.5): Fields and Filter shape both (an event carries
// the changed rows that still match the filter, with the fields asked
// for; a row that stops matching sends nothing); Sort, Limit, Offset,
// Page, Search and Deep shape the init only (an event carries every
// changed row that matches the filter, inside the window or not); an
// Aggregate or GroupBy makes the init the aggregate of the collection but
// each event the aggregate of the changed rows alone. The manager
// therefore never delivers such events as they are: a subscription with
// Aggregate or GroupBy receives a fresh init, recomputed by the server,
// after each burst of events (see manager.SubscribeOptions).
//
// Limit follows Directus except for 0: 0 leaves the limit out (the server then
// applies QUERY_LIMIT_DEFAULT, 100 unless configured), -1 asks for every row.
type Query struct {
	Fields []string       `json:"fields,omitempty"`
	Filter map[string]any `json:"filter,omitempty"`
	Search string         `json:"search,omitempty"`
	Sort   []string       `json:"sort,omitempty"`
	Limit  int            `json:"-"`
	Offset int            `json:"offset,omitempty"`
	Page   int            `json:"page,omitempty"`
	Meta   string         `json:"meta,omitempty"`
	Deep   map[string]any `json:"deep,omitempty"`
	// Aggregate maps a function (count, countDistinct, countAll, sum,
	// sumDistinct, avg, avgDistinct, min, max) to the fields it applies to;
	// "*" counts rows: {"count": {"*"}} answers "count": n, other functions
	// an object by field, e.g. "sum": {"views": 42}.
	Aggregate map[string][]string `json:"aggregate,omitempty"`
	// GroupBy names the fields whose values form the groups of Aggregate:
	// one row per group, with those fields and the aggregates.
	GroupBy []string `json:"groupBy,omitempty"`
	// Alias maps an alias to a field (or a relational path) to read it
	// under, e.g. to read one relation twice with different Deep queries.
	Alias map[string]string `json:"alias,omitempty"`
}

// Aggregated reports whether q asks for aggregates rather than rows.
func (q *Query) Aggregated() bool {
	return q != nil && (len(q.Aggregate) > 0 || len(q.GroupBy) > 0)
}

// MarshalJSON writes limit only when it is not 0.
func (q Query) MarshalJSON() ([]byte, error) {
	type plain Query
	v := struct {
		plain
		Limit *int `json:"limit,omitempty"`
	}{plain: plain(q)}
	if q.Limit != 0 {
		v.Limit = &q.Limit
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads limit back into Limit.
func (q *Query) UnmarshalJSON(b []byte) error {
	type plain Query
	v := struct {
		*plain
		Limit *int `json:"limit"`
	}{plain: (*plain)(q)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	q.Limit = 0
	if v.Limit != nil {
		q.Limit = *v.Limit
	}
	return nil
}

// AuthMessage is the client's auth frame. Exactly one credential form should
// be set: AccessToken, Email with Password, or RefreshToken. Its String,
// GoString and LogValue never show the credentials.
type AuthMessage struct {
	AccessToken  string `json:"access_token,omitempty"`
	Email        string `json:"email,omitempty"`
	Password     string `json:"password,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	UID          UID    `json:"uid,omitempty"`
}

// MarshalJSON adds "type":"auth".
func (m AuthMessage) MarshalJSON() ([]byte, error) {
	type plain AuthMessage
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"auth", plain(m)})
}

func (m AuthMessage) Form() string {
	switch {
	case m.AccessToken != "":
		return "access_token"
	case m.RefreshToken != "":
		return "refresh_token"
	case m.Email != "":
		return "email"
	}
	return "none"
}

// String never shows the credentials.
func (m AuthMessage) String() string { return "auth(" + m.Form() + ", uid " + string(m.UID) + ")" }

// GoString never shows the credentials.
func (m AuthMessage) GoString() string { return "conn.AuthMessage{" + m.Form() + ", redacted}" }

// LogValue never shows the credentials.
func (m AuthMessage) LogValue() slog.Value {
	return slog.GroupValue(slog.String("form", m.Form()), slog.String("uid", string(m.UID)))
}

// SubscribeMessage is the client's subscribe frame.
type SubscribeMessage struct {
	Collection string `json:"collection"`
	// Event limits the subscription to one action: EventCreate, EventUpdate
	// or EventDelete. An event-only subscription's init carries no data.
	Event string `json:"event,omitempty"`
	// Item, a string or a number, subscribes to one item: init and update
	// data are then objects and delete data a bare key.
	Item  any    `json:"item,omitempty"`
	Query *Query `json:"query,omitempty"`
	UID   UID    `json:"uid,omitempty"`
}

// MarshalJSON adds "type":"subscribe".
func (m SubscribeMessage) MarshalJSON() ([]byte, error) {
	type plain SubscribeMessage
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"subscribe", plain(m)})
}

// ErrUnsubscribeAll is returned when an UnsubscribeMessage without a UID is
// sent without All: the server would drop every subscription of the
// connection.
var ErrUnsubscribeAll = errors.New("directus: unsubscribe without uid drops every subscription; set All to mean it")

// UnsubscribeMessage is the client's unsubscribe frame. An unsubscribe
// without uid ends every subscription on the connection, so it is only sent
// when All is set.
type UnsubscribeMessage struct {
	UID UID
	All bool
}

// MarshalJSON adds "type":"unsubscribe" and refuses a uid-less frame unless All is set.
func (m UnsubscribeMessage) MarshalJSON() ([]byte, error) {
	if m.UID == "" && !m.All {
		return nil, ErrUnsubscribeAll
	}
	return json.Marshal(struct {
		Type string `json:"type"`
		UID  UID    `json:"uid,omitempty"`
	}{"unsubscribe", m.UID})
}

// ItemsMessage is an items request (create, read, update or delete over the
// WebSocket). Its reply is an items frame with the same uid.
type ItemsMessage struct {
	Collection string `json:"collection"`
	Action     string `json:"action"`
	Data       any    `json:"data,omitempty"`
	ID         any    `json:"id,omitempty"`
	IDs        []any  `json:"ids,omitempty"`
	Query      *Query `json:"query,omitempty"`
	UID        UID    `json:"uid,omitempty"`
}

// MarshalJSON adds "type":"items".
func (m ItemsMessage) MarshalJSON() ([]byte, error) {
	type plain ItemsMessage
	return json.Marshal(struct {
		Type string `json:"type"`
		plain
	}{"items", plain(m)})
}

// PingMessage asks the server for a pong with the same uid.
type PingMessage struct {
	UID UID `json:"uid,omitempty"`
}

// MarshalJSON adds "type":"ping".
func (m PingMessage) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Type string `json:"type"`
		UID  UID    `json:"uid,omitempty"`
	}{"ping", m.UID})
}

// Frame types the server sends.
const (
	TypeAuth         = "auth"
	TypeSubscription = "subscription"
	TypeSubscribe    = "subscribe"
	TypeUnsubscribe  = "unsubscribe"
	TypeItems        = "items"
	TypePing         = "ping"
	TypePong         = "pong"
	TypeServer       = "server"
)

// Message is one frame received from the server, decoded by DecodeMessage.
//
// Data and Meta are the raw JSON of the "data" and "meta" keys, nil when the
// key is absent (an event-only subscription's init has no data). Err is set
// for frames with "status":"error". Frames of types this package does not
// know are decoded too and left to the caller to ignore.
type Message struct {
	Type   string
	Event  string // subscription frames: init, create, update, delete, unsubscribe
	Status string // "ok" on auth replies, "error" on error frames, "" otherwise
	UID    UID
	Data   json.RawMessage
	Meta   json.RawMessage
	Err    *ServerError
	// RefreshToken is set on auth replies to email/password and
	// refresh-token auth; String and LogValue never show it.
	RefreshToken string
	// Received is when the read loop received the frame.
	Received time.Time
	// Session is the ID of the Session that received the frame.
	Session uint64
	// Seq numbers the frames of a session from 1, in the order they were
	// read: where a reply stands among the events around it.
	Seq uint64
}

// String describes the frame without its data or tokens. It has a value
// receiver, so that a Message printed by value (%v, %+v) shows no refresh
// token either.
func (m Message) String() string {
	s := m.Type
	if m.Event != "" {
		s += "/" + m.Event
	}
	if m.Status != "" {
		s += " " + m.Status
	}
	if m.UID != "" {
		s += " uid=" + Truncate(string(m.UID), 64)
	}
	if m.Err != nil {
		s += " " + string(m.Err.Code)
	}
	return s
}

// GoString describes the frame like String, for %#v.
func (m Message) GoString() string { return "protocol.Message{" + m.String() + "}" }

// LogValue describes the frame without its data or tokens.
func (m Message) LogValue() slog.Value { return slog.StringValue(m.String()) }

// MarshalJSON writes the frame's fields with the refresh token redacted:
// a Message marshalled for a log or an API never carries the credential.
func (m Message) MarshalJSON() ([]byte, error) {
	type plain Message
	p := plain(m)
	if p.RefreshToken != "" {
		p.RefreshToken = "REDACTED"
	}
	return json.Marshal(p)
}

// wireMessage holds the raw JSON values of the keys DecodeMessage reads, as
// subslices of the frame.
type wireMessage struct {
	Type, Event, Status, UID, Data, Meta, Error, RefreshToken []byte
}

// set keeps v, the raw value of key, when key is a field of the envelope;
// both splitters (splitFrame and splitObject) use it.
func (w *wireMessage) set(key, v []byte) {
	switch string(key) {
	case "type":
		w.Type = v
	case "event":
		w.Event = v
	case "status":
		w.Status = v
	case "uid":
		w.UID = v
	case "data":
		w.Data = v
	case "meta":
		w.Meta = v
	case "error":
		w.Error = v
	case "refresh_token":
		w.RefreshToken = v
	}
}

// DecodeMessage decodes one frame. It returns a *ProtocolError for invalid
// JSON, a value that is not an object, a missing or non-string type, and, for
// the types of docs/PROTOCOL.md §4, fields of the wrong shape. Frames of other
// types are returned with only Type (and Data/Meta) set, unvalidated.
//
// Keys match exactly, as Directus writes them. Data and Meta are subslices
// of b, not copies: the frame is validated once and scanned once, and the
// data is decoded only by whoever needs it (an init of 100,000 rows is one
// frame). b must therefore not be modified afterwards.
func DecodeMessage(b []byte) (*Message, error) {
	w, valid, object := splitFrame(b)
	if !valid {
		return nil, &ProtocolError{Reason: "invalid JSON", Size: len(b), Err: json.Unmarshal(b, new(struct{}))}
	}
	if !object {
		return nil, &ProtocolError{Reason: "not a JSON object", Size: len(b)}
	}
	m := &Message{Data: nullToNil(w.Data), Meta: nullToNil(w.Meta)}
	if w.Type == nil {
		return nil, &ProtocolError{Reason: "frame has no type", Size: len(b)}
	}
	t, err := jsonString(w.Type)
	if err != nil {
		return nil, &ProtocolError{Reason: "type is not a string", Size: len(b)}
	}
	m.Type = t
	switch m.Type {
	case TypeAuth, TypeSubscription, TypeSubscribe, TypeUnsubscribe, TypeItems, TypePing, TypePong, TypeServer:
	default:
		return m, nil
	}
	bad := func(field string, err error) (*Message, error) {
		return nil, &ProtocolError{Reason: field + " has the wrong shape", Type: m.Type, Size: len(b), Err: err}
	}
	if err := optionalString(w.Event, &m.Event); err != nil {
		return bad("event", err)
	}
	if err := optionalString(w.Status, &m.Status); err != nil {
		return bad("status", err)
	}
	if err := optionalString(w.RefreshToken, &m.RefreshToken); err != nil {
		return bad("refresh_token", err)
	}
	if w.UID != nil {
		if err := m.UID.UnmarshalJSON(w.UID); err != nil {
			return bad("uid", err)
		}
	}
	if m.Type == TypeSubscription && m.Event == "" {
		return nil, &ProtocolError{Reason: "subscription frame without event", Type: m.Type, Size: len(b)}
	}
	if m.Status == "error" {
		var e struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if w.Error == nil || string(w.Error) == "null" {
			return nil, &ProtocolError{Reason: "error frame without error object", Type: m.Type, Size: len(b)}
		}
		if err := json.Unmarshal(w.Error, &e); err != nil {
			return bad("error", err)
		}
		m.Err = &ServerError{Type: m.Type, Code: Code(e.Code), Message: e.Message, UID: m.UID}
	}
	return m, nil
}

// splitObject finds the values of the keys DecodeMessage reads in b, which
// must be valid JSON. It reports false when b is not an object. A repeated
// key keeps its last value, as encoding/json does.
func splitObject(b []byte) (w wireMessage, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return w, false
	}
	i = skipSpace(b, i+1)
	for i < len(b) && b[i] != '}' {
		keyEnd := jsonskip.Value(b, i)
		key := b[i+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			if s, err := jsonString(b[i:keyEnd]); err == nil {
				key = []byte(s)
			}
		}
		i = skipSpace(b, keyEnd) + 1 // past ':'
		i = skipSpace(b, i)
		end := jsonskip.Value(b, i)
		w.set(key, b[i:end:end])
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return w, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// jsonString decodes a JSON string value; plain strings without escapes
// take a fast path.
func jsonString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", fmt.Errorf("expected a string")
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

func optionalString(raw []byte, dst *string) error {
	if raw == nil || string(raw) == "null" {
		return nil
	}
	s, err := jsonString(raw)
	if err != nil {
		return err
	}
	*dst = s
	return nil
}

func nullToNil(raw []byte) json.RawMessage {
	if raw == nil || string(raw) == "null" {
		return nil
	}
	return raw
}

// CheckClientFrame checks an encoded frame a client is about to send:
// Directus accepts only a JSON object with a string "type" (anything else
// gets a uid-less INVALID_PAYLOAD no caller could match). The error, a
// *ConfigError, says what is wrong in the sender's terms.
func CheckClientFrame(b []byte) error {
	bad := func(reason string) error { return &ConfigError{Field: "message", Reason: reason} }
	i := skipSpace(b, 0)
	if i >= len(b) || !json.Valid(b) {
		return bad("not valid JSON")
	}
	if b[i] != '{' {
		return bad("must be a JSON object with a \"type\", not " + jsonKind(b[i]))
	}
	w, _ := splitObject(b)
	if w.Type == nil {
		return bad("has no \"type\"")
	}
	if _, err := jsonString(w.Type); err != nil {
		return bad("its \"type\" is not a string")
	}
	return nil
}

// EncodeClientFrame marshals a frame a client is about to send and checks
// it as CheckClientFrame does; it returns the encoded frame and its type.
// Every error is a *ConfigError in the sender's terms.
func EncodeClientFrame(msg any) (frame []byte, typ string, err error) {
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, "", &ConfigError{Field: "message", Reason: "does not marshal to JSON: " + err.Error()}
	}
	if err := CheckClientFrame(b); err != nil {
		return nil, "", err
	}
	w, _ := splitObject(b)
	typ, _ = jsonString(w.Type)
	return b, typ, nil
}

func jsonKind(c byte) string {
	switch c {
	case '"':
		return "a string"
	case '[':
		return "an array"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

// plainString returns the text of the JSON string b when it is complete
// and holds no escape, no control character and only valid UTF-8, the
// case in which json.Unmarshal would return that text unchanged; anything
// else reports false, for json.Unmarshal to decide.
func plainString(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	inner := b[1 : len(b)-1]
	for _, c := range inner {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(inner) {
		return "", false
	}
	return string(inner), true
}
