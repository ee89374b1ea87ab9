package directustest

import (
	"encoding/json"
	"slices"
)

// subscription is one registered subscription.
type subscription struct {
	seq        uint64
	conn       *wsConn
	uid        string // String(uid)
	hasUID     bool
	collection string
	event      string // "", "create", "update", "delete"
	item       string // String(item)
	hasItem    bool
	queryRaw   json.RawMessage
	params     *queryParams
	cq         *compiledQuery // compiled lazily against cqColl
	cqColl     *collection
	cqErr      *dxError
	removed    bool
}

func (sub *subscription) uidVal() uidVal { return stringUID(sub.uid, sub.hasUID) }

// compiled resolves the query against the collection, once.
func (sub *subscription) compiled(c *collection) (*compiledQuery, *dxError) {
	if sub.cqColl != c {
		sub.cqColl = c
		sub.cq, sub.cqErr = compileQuery(c, sub.params)
	}
	return sub.cq, sub.cqErr
}

// subList holds the subscriptions of one collection in creation order.
// Removed entries are tombstoned and compacted lazily, so subscribing and
// unsubscribing are O(1) amortised even with many thousands of them.
type subList struct {
	subs []*subscription
	dead int
}

func (l *subList) compact() {
	if l.dead == 0 || l.dead < len(l.subs)/2 {
		return
	}
	l.subs = slices.DeleteFunc(l.subs, func(s *subscription) bool { return s.removed })
	l.dead = 0
}

// subRegistry is the subscriptions part of the server: every live
// subscription, by collection in creation order (the order in which events
// are served) and by connection. It is guarded by Server.mu, the lock the
// writes hold, because an event must be served to exactly the
// subscriptions that existed when its write happened.
type subRegistry struct {
	byColl map[string]*subList
	seq    uint64
}

func newSubRegistry() subRegistry { return subRegistry{byColl: map[string]*subList{}} }

// of returns the subscriptions of a collection, nil if none.
func (r *subRegistry) of(collection string) *subList { return r.byColl[collection] }

// add registers sub with its collection and its connection.
func (r *subRegistry) add(sub *subscription) {
	r.seq++
	sub.seq = r.seq
	l := r.byColl[sub.collection]
	if l == nil {
		l = &subList{}
		r.byColl[sub.collection] = l
	}
	l.compact()
	l.subs = append(l.subs, sub)
	c := sub.conn
	c.subs = append(c.subs, sub)
	if sub.hasUID {
		c.subsByUID[sub.uid] = sub
	}
}

// remove unregisters sub; removing it twice is harmless.
func (r *subRegistry) remove(sub *subscription) {
	if sub.removed {
		return
	}
	sub.removed = true
	if l := r.byColl[sub.collection]; l != nil {
		l.dead++
		l.compact()
		if len(l.subs) == 0 {
			delete(r.byColl, sub.collection)
		}
	}
	c := sub.conn
	if sub.hasUID && c.subsByUID[sub.uid] == sub {
		delete(c.subsByUID, sub.uid)
	}
	c.deadSubs++
	if c.deadSubs >= len(c.subs)/2 {
		c.subs = slices.DeleteFunc(c.subs, func(x *subscription) bool { return x.removed })
		c.deadSubs = 0
	}
}
