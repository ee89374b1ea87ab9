package store

import (
	"fmt"
	"reflect"
	"strconv"

	"github.com/e41af43e/directus-realtime/handlers"
)

// KeyError reports a key that does not convert to the collection's key type,
// for example the uuid string of a delete sent to a collection keyed by int.
type KeyError struct {
	Key  handlers.Key
	Type string
	Err  error
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("directus: key %q is not a %s: %v", string(e.Key), e.Type, e.Err)
}

func (e *KeyError) Unwrap() error { return e.Err }

// convertKey turns a normalised key (text) into K. Delete events carry keys
// as the deleting request named them, strings or numbers, so a collection
// keyed by int64 receives "1521" and 1521 alike.
func convertKey[K comparable](k handlers.Key) (K, error) {
	var out K
	v := reflect.ValueOf(&out).Elem()
	switch v.Kind() {
	case reflect.String:
		v.SetString(string(k))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(string(k), 10, v.Type().Bits())
		if err != nil {
			return out, &KeyError{Key: k, Type: v.Type().String(), Err: err}
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(string(k), 10, v.Type().Bits())
		if err != nil {
			return out, &KeyError{Key: k, Type: v.Type().String(), Err: err}
		}
		v.SetUint(n)
	default:
		return out, &KeyError{Key: k, Type: v.Type().String(), Err: fmt.Errorf("unsupported key kind %s", v.Kind())}
	}
	return out, nil
}
