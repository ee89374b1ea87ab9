// Package protocol is the vocabulary of Directus's realtime WebSocket
// endpoint ("/websocket") and the error vocabulary every package of this
// module shares: the frames a client sends (AuthMessage, SubscribeMessage,
// UnsubscribeMessage, ItemsMessage, PingMessage), the Query they carry, the
// frames a server sends (Message, decoded by DecodeMessage), the wire
// constants (types, events, actions, error codes) and the errors built from
// them (ServerError, ProtocolError), plus ErrClosed and ConfigError, which
// conn, manager and store all return.
//
// The shapes follow what a real Directus 12.4.1 sends, recorded in
// docs/PROTOCOL.md; where the Directus documentation and the observed
// server disagree, the observed server wins.
//
// # Guarantees
//
// DecodeMessage never panics, whatever the input: a frame it cannot use is a
// *ProtocolError. The client frames marshal to exactly one JSON object with
// the right "type", and an UnsubscribeMessage without a uid refuses to
// marshal unless All is set (Directus would drop every subscription of the
// connection). AuthMessage and Message never show a credential when
// printed, logged or marshalled: their String, GoString, LogValue and (for
// Message) MarshalJSON leave tokens and passwords out.
//
// # Concurrency
//
// The package holds no state. Values are plain data: safe to share for
// reading, not for concurrent writing.
package protocol
