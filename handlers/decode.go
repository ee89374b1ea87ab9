package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ShapeError reports event data of a shape the kind does not allow, or that
// does not decode into the requested type.
type ShapeError struct {
	Kind Kind
	Want string
	Err  error
}

func (e *ShapeError) Error() string {
	s := fmt.Sprintf("directus: %s event: data is not %s", e.Kind, e.Want)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ShapeError) Unwrap() error { return e.Err }

// Items decodes the items of an init, create or update event: an array gives
// one T per element, a single object (single-item subscriptions) one T, and
// absent data (the init of an event-only subscription) none.
func Items[T any](ev Event) ([]T, error) {
	data := bytes.TrimSpace(ev.Data)
	if len(data) == 0 {
		return nil, nil
	}
	switch data[0] {
	case '[':
		var items []T
		if err := json.Unmarshal(data, &items); err != nil {
			return nil, &ShapeError{Kind: ev.Kind, Want: "an array of items", Err: err}
		}
		return items, nil
	case '{':
		var item T
		if err := json.Unmarshal(data, &item); err != nil {
			return nil, &ShapeError{Kind: ev.Kind, Want: "an item", Err: err}
		}
		return []T{item}, nil
	}
	return nil, &ShapeError{Kind: ev.Kind, Want: "an array or an object"}
}

// Key is a primary key in normal form: the text of a JSON string, or the
// shortest decimal text of an integral JSON number, so that the string
// "1521" a DELETE /items/posts/1521 sends and the number 1521 a batch delete
// sends are the same Key.
type Key string

// NormalizeKey turns one raw JSON key (a string or a number) into a Key.
func NormalizeKey(raw json.RawMessage) (Key, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", errors.New("empty key")
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return Key(s), nil
	case c == '-' || (c >= '0' && c <= '9'):
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", err
		}
		return numberKey(n), nil
	}
	return "", fmt.Errorf("a key must be a string or a number, got %.20s", raw)
}

func numberKey(n json.Number) Key {
	if i, err := n.Int64(); err == nil {
		return Key(strconv.FormatInt(i, 10))
	}
	// Not -1<<63 itself: integers just below it (down to -1<<63-1024)
	// round to it as float64, and -1<<63 written as an integer was taken
	// by the Int64 case above.
	if f, err := n.Float64(); err == nil && f == float64(int64(f)) && f < 1<<63 && f > -1<<63 {
		return Key(strconv.FormatInt(int64(f), 10))
	}
	return Key(n.String())
}

// KeyOf normalises a Go key value: a string, an integer type, a
// json.Number or a float64 with an integral value.
func KeyOf(v any) (Key, error) {
	switch k := v.(type) {
	case string:
		return Key(k), nil
	case Key:
		return k, nil
	case json.Number:
		return numberKey(k), nil
	case int:
		return Key(strconv.FormatInt(int64(k), 10)), nil
	case int32:
		return Key(strconv.FormatInt(int64(k), 10)), nil
	case int64:
		return Key(strconv.FormatInt(k, 10)), nil
	case uint:
		return Key(strconv.FormatUint(uint64(k), 10)), nil
	case uint32:
		return Key(strconv.FormatUint(uint64(k), 10)), nil
	case uint64:
		return Key(strconv.FormatUint(k, 10)), nil
	case float64:
		return numberKey(json.Number(strconv.FormatFloat(k, 'f', -1, 64))), nil
	}
	return "", fmt.Errorf("unsupported key type %T", v)
}

// Keys decodes the keys of a delete event: an array of strings and numbers,
// or one bare key (single-item subscriptions).
func Keys(ev Event) ([]Key, error) {
	data := bytes.TrimSpace(ev.Data)
	if len(data) == 0 {
		return nil, &ShapeError{Kind: ev.Kind, Want: "keys", Err: errors.New("no data")}
	}
	if data[0] != '[' {
		k, err := NormalizeKey(data)
		if err != nil {
			return nil, &ShapeError{Kind: ev.Kind, Want: "a key", Err: err}
		}
		return []Key{k}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		return nil, &ShapeError{Kind: ev.Kind, Want: "an array of keys", Err: err}
	}
	keys := make([]Key, 0, len(raws))
	for _, r := range raws {
		k, err := NormalizeKey(r)
		if err != nil {
			return nil, &ShapeError{Kind: ev.Kind, Want: "an array of keys", Err: err}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// ItemKeys returns the normalised value of field keyField of every item of
// an init, create or update event, in order.
func ItemKeys(ev Event, keyField string) ([]Key, error) {
	items, err := Items[map[string]json.RawMessage](ev)
	if err != nil {
		return nil, err
	}
	keys := make([]Key, 0, len(items))
	for _, it := range items {
		raw, ok := it[keyField]
		if !ok {
			return nil, &ShapeError{Kind: ev.Kind, Want: "items with a " + strconv.Quote(keyField) + " field"}
		}
		k, err := NormalizeKey(raw)
		if err != nil {
			return nil, &ShapeError{Kind: ev.Kind, Want: "items with a " + strconv.Quote(keyField) + " key", Err: err}
		}
		keys = append(keys, k)
	}
	return keys, nil
}
