package graphql

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/e41af43e/directus-realtime/handlers"
	"github.com/e41af43e/directus-realtime/protocol"
)

// Subprotocol is the WebSocket subprotocol of graphql-ws.
const Subprotocol = "graphql-transport-ws"

// frame is one graphql-ws message, in both directions.
type frame struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	// Status and Error are Directus's own error frames ({"type":"auth",
	// "status":"error",...}), sent on the same socket when the
	// connection_init token is refused.
	Status string `json:"status,omitempty"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// isName reports whether s is a GraphQL name: /[_A-Za-z][_0-9A-Za-z]*/.
func isName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return true
}

// subscriptionQuery is the document of one subscription: the only shape
// the endpoint has (docs/PROTOCOL.md §13.3).
func subscriptionQuery(collection, event string, fields []string) string {
	var b strings.Builder
	b.WriteString("subscription { ")
	b.WriteString(collection)
	b.WriteString("_mutated")
	if event != "" {
		b.WriteString("(event: ")
		b.WriteString(event)
		b.WriteString(")")
	}
	b.WriteString(" { key event data { ")
	b.WriteString(strings.Join(fields, " "))
	b.WriteString(" } } }")
	return b.String()
}

// mutation is the field value of one next message.
type mutation struct {
	Key   json.RawMessage `json:"key"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// parseNext decodes a next payload {"data":{"<collection>_mutated":{…}}}
// into an event of the REST endpoint's shape: create and update carry an
// array of one row, delete an array of one key. An execution error in the
// payload (Directus swallows its own, but a proxy may not) is returned.
func parseNext(payload json.RawMessage, collection string) (kind handlers.Kind, key, data json.RawMessage, err error) {
	var p struct {
		Data   map[string]json.RawMessage `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return 0, nil, nil, &protocol.ProtocolError{Reason: "next payload is not JSON", Type: "next", Size: len(payload), Err: err}
	}
	if len(p.Errors) > 0 {
		msgs := make([]string, len(p.Errors))
		for i, e := range p.Errors {
			msgs[i] = protocol.Truncate(e.Message, 300)
		}
		return 0, nil, nil, &SubscribeError{Collection: collection, Messages: msgs}
	}
	raw, ok := p.Data[collection+"_mutated"]
	if !ok {
		return 0, nil, nil, &protocol.ProtocolError{Reason: "next without " + collection + "_mutated", Type: "next"}
	}
	var m mutation
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, nil, nil, &protocol.ProtocolError{Reason: "mutation is not an object", Type: "next", Err: err}
	}
	kind, ok = handlers.ParseKind(m.Event)
	if !ok || kind == handlers.KindInit {
		return 0, nil, nil, &protocol.ProtocolError{Reason: "unknown event " + protocol.Truncate(m.Event, 40), Type: "next"}
	}
	if !isScalarKey(m.Key) {
		return 0, nil, nil, &protocol.ProtocolError{Reason: "key is not a string or number", Type: "next"}
	}
	return kind, m.Key, m.Data, nil
}

func isScalarKey(k json.RawMessage) bool {
	k = bytes.TrimSpace(k)
	if len(k) == 0 {
		return false
	}
	if k[0] == '"' {
		var s string
		return json.Unmarshal(k, &s) == nil
	}
	var n json.Number
	return json.Unmarshal(k, &n) == nil
}

// wrap returns [v].
func wrap(v json.RawMessage) json.RawMessage {
	out := make([]byte, 0, len(v)+2)
	out = append(out, '[')
	out = append(out, v...)
	return append(out, ']')
}
