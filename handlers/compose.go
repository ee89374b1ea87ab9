package handlers

import "errors"

// Funcs calls the function set for the event's kind; kinds without one are
// ignored.
type Funcs struct {
	OnInit   func(Event) error
	OnCreate func(Event) error
	OnUpdate func(Event) error
	OnDelete func(Event) error
	OnError  func(Event) error
}

// Handle dispatches ev by kind.
func (f Funcs) Handle(ev Event) error {
	var fn func(Event) error
	switch ev.Kind {
	case KindInit:
		fn = f.OnInit
	case KindCreate:
		fn = f.OnCreate
	case KindUpdate:
		fn = f.OnUpdate
	case KindDelete:
		fn = f.OnDelete
	case KindError:
		fn = f.OnError
	}
	if fn == nil {
		return nil
	}
	return fn(ev)
}

// Typed decodes events into T and calls the function set for the kind.
// Init, create and update receive the decoded items; delete receives the
// normalised keys. A decoding failure is returned as *ShapeError and the
// callback is not called.
type Typed[T any] struct {
	OnInit   func(ev Event, items []T) error
	OnCreate func(ev Event, items []T) error
	OnUpdate func(ev Event, items []T) error
	OnDelete func(ev Event, keys []Key) error
	OnError  func(ev Event) error
}

// Handle decodes ev and dispatches it by kind.
func (t Typed[T]) Handle(ev Event) error {
	var withItems func(Event, []T) error
	switch ev.Kind {
	case KindInit:
		withItems = t.OnInit
	case KindCreate:
		withItems = t.OnCreate
	case KindUpdate:
		withItems = t.OnUpdate
	case KindDelete:
		if t.OnDelete == nil {
			return nil
		}
		keys, err := Keys(ev)
		if err != nil {
			return err
		}
		return t.OnDelete(ev, keys)
	case KindError:
		if t.OnError == nil {
			return nil
		}
		return t.OnError(ev)
	}
	if withItems == nil {
		return nil
	}
	items, err := Items[T](ev)
	if err != nil {
		return err
	}
	return withItems(ev, items)
}

// Chain calls every handler in order with each event and joins their errors.
func Chain(hs ...Handler) Handler {
	return HandlerFunc(func(ev Event) error {
		var errs []error
		for _, h := range hs {
			if err := h.Handle(ev); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// Only passes events of the given kinds to h and drops the others.
func Only(h Handler, kinds ...Kind) Handler {
	var want [KindError + 1]bool
	for _, k := range kinds {
		if k <= KindError {
			want[k] = true
		}
	}
	return HandlerFunc(func(ev Event) error {
		if ev.Kind <= KindError && want[ev.Kind] {
			return h.Handle(ev)
		}
		return nil
	})
}

// Invalidation says which cached entries of a collection are stale.
type Invalidation struct {
	Kind       Kind
	Collection string
	// Keys are the affected primary keys; when All is set every entry of
	// the collection is stale and Keys is nil.
	Keys []Key
	All  bool
}

// Invalidate calls f with the keys each event affects, read from keyField of
// the items ("id" when empty) and from the keys of deletes. An init (first
// or resync) and an error event invalidate everything: after a reconnect or
// a lost event, any entry may be stale.
func Invalidate(keyField string, f func(Invalidation)) Handler {
	if keyField == "" {
		keyField = "id"
	}
	return HandlerFunc(func(ev Event) error {
		inv := Invalidation{Kind: ev.Kind, Collection: ev.Collection}
		var err error
		switch ev.Kind {
		case KindInit, KindError:
			inv.All = true
		case KindCreate, KindUpdate:
			inv.Keys, err = ItemKeys(ev, keyField)
		case KindDelete:
			inv.Keys, err = Keys(ev)
		default:
			return nil
		}
		if err != nil {
			// The keys are unknown, so nothing cached can be trusted.
			inv.Keys, inv.All = nil, true
		}
		f(inv)
		return err
	})
}
