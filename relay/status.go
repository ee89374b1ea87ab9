package relay

import (
	"encoding/json"
	"time"
)

// Status is the content of a bucket's status entry (StatusKey), written by
// the leading relay.
type Status struct {
	// Complete is set once a relay wrote every row of its replica into the
	// bucket: from then on the bucket holds the collection (as of the
	// relay's replica, plus the events in flight). Fleet replicas report
	// synced only after it.
	Complete bool `json:"complete"`
	// Leader is the identity of the relay that wrote this entry.
	Leader string `json:"leader"`
	// Reconciled is when the leader last made the bucket equal to its
	// replica: its first full write, each hand-over, and each reconcile of
	// its replica against Directus.
	Reconciled time.Time `json:"reconciled"`
	// HistoryFrom is the first revision from which the bucket's history is
	// whole: delete markers of earlier revisions may have been compacted
	// away, so a fleet replica whose last revision is before it reloads
	// the whole bucket instead of resuming.
	HistoryFrom uint64 `json:"history_from,omitempty"`
}

func parseStatus(b []byte) (Status, bool) {
	var s Status
	if json.Unmarshal(b, &s) != nil {
		return Status{}, false
	}
	return s, true
}
