package ops

import (
	"errors"

	"github.com/e41af43e/directus-realtime/protocol"
	"github.com/e41af43e/directus-realtime/store"
)

// Redacted stands for a value the status page does not show.
const Redacted = "[redacted]"

// Redact returns q as the status page shows it: the field names of fields,
// sort and filter are kept (they are the schema's), every value a filter
// compares with is replaced by Redacted, and search and deep, which may
// hold anything, are replaced whole. A filter value may be a token, an
// e-mail address or a password hash; none is ever shown. nil stays nil.
func Redact(q *protocol.Query) any {
	if q == nil {
		return nil
	}
	out := map[string]any{}
	if len(q.Fields) > 0 {
		out["fields"] = q.Fields
	}
	if len(q.Sort) > 0 {
		out["sort"] = q.Sort
	}
	if q.Filter != nil {
		out["filter"] = redactFilter(q.Filter)
	}
	if q.Search != "" {
		out["search"] = Redacted
	}
	if q.Deep != nil {
		out["deep"] = Redacted
	}
	if q.Limit != 0 {
		out["limit"] = q.Limit
	}
	if q.Offset != 0 {
		out["offset"] = q.Offset
	}
	if q.Page != 0 {
		out["page"] = q.Page
	}
	if q.Meta != "" {
		out["meta"] = q.Meta
	}
	return out
}

// redactFilter keeps the keys (field names and operators) of a filter tree
// and replaces every leaf.
func redactFilter(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = redactFilter(e)
		}
		return m
	case []any: // the operands of _and, _or, or the values of _in
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = redactFilter(e)
		}
		return l
	}
	return Redacted
}

func configError(field, reason string) error {
	return &protocol.ConfigError{Field: field, Reason: reason}
}

func asFailure(err error, fe **store.FailureError) bool { return errors.As(err, fe) }
