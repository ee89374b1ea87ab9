// Package handlers holds the event type that subscriptions deliver and small
// handlers that compose: typed decoding, per-kind callbacks, cache
// invalidation, chaining and filtering.
//
// A subscription of the manager package calls its Handler once per event, in
// the order the server sent them, from one goroutine at a time: a handler
// never runs concurrently with itself for one subscription, but handlers of
// different subscriptions run concurrently. A handler's error is counted on
// its subscription and reported; it does not stop delivery.
//
// Directus sends events whose data depends on the subscription (docs/PROTOCOL.md
// §5): init, create and update carry an array of items, or one object for a
// single-item subscription; delete carries the raw keys as the deleting
// request named them, strings or numbers for the same collection, or a bare
// key for a single-item subscription. Items and Keys accept every one of
// these shapes, and Keys normalises keys so that "1521" and 1521 are the same
// Key.
//
// Event.Data is shared by every subscriber of a frame and must not be
// modified.
package handlers
