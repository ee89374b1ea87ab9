// Package relay fans one Directus feed out to a fleet through NATS
// JetStream key-value buckets: relay processes hold the Directus
// connection and mirror collections into buckets, and any number of fleet
// replicas (store.Collection fed by a Source) follow the buckets instead
// of Directus. Directus then serves one socket, one subscription and one
// init per collection, however many pods replicate it, and a pod that
// restarts resumes from the bucket rather than reloading from Directus.
//
// # The bucket
//
// One bucket per collection (Collection.Bucket, "directus_<name>" by
// default): key = the row's primary key (see EncodeKey: string and numeric
// keys, in the NATS key charset), value = the row's JSON as Directus sent
// it, a deleted row = a KV delete. The entry StatusKey holds a Status: it
// says Complete once a relay wrote every row of its replica, when the
// bucket was last made equal to a fresh read of Directus (Reconciled), and
// from which revision the history is whole (HistoryFrom).
//
// # What the relay writes
//
// Only differences. The relay keeps a store.Collection of each collection
// (so the store's guarantees hold: resync after reconnects, reconcile,
// bounded queues) and, while leading, makes each changed key's entry equal
// to the replica's row, comparing with what the bucket holds: a resync or
// reconcile that finds nothing new writes nothing, and a Directus restart
// that changed nothing costs one init and no write. Every write is a
// compare-and-set on the revision the relay knows for the key; a write
// refused because the key moved on is retried against the new revision,
// and an entry the relay did not write (a former leader's late write) is
// checked against the replica and corrected.
//
// # Leader election
//
// Relays sharing Options.LeaseBucket elect one writer with a lease: a KV
// entry (LeaseKey) in a bucket whose MaxAge is Options.LeaseTTL, claimed
// with Create, renewed every TTL/4 with a compare-and-set Update. A leader
// counts on its lease only for 3/4 of the TTL after its last renewal was
// sent, and the server drops the entry a full TTL after storing it, so a
// standby can claim it only after the former leader stopped counting on it
// (a process paused longer than that is caught by the per-key
// compare-and-set above). A standby keeps a warm replica and follows the
// bucket. On winning the lease it first re-reads each collection from
// Directus (a read that starts after the former leader stopped, so it is
// at least as new as anything that leader wrote), catches up with the
// bucket's last revision, then compares every key and writes only the
// differences, while events keep coming: nothing written in the hand-over
// is lost, nothing deleted comes back, and no row goes back to an older
// version. A leader that is cancelled resigns (deletes the lease), so a
// standby takes over within TTL/4; one that dies is replaced within about
// 1.25 TTL.
//
// # Fleet replicas
//
// A Source feeds a store.Collection from a bucket (Collection.Follow): the
// same reads, indexes, listeners and WaitSynced as a Directus replica. It
// loads the bucket's current values and applies them as one init when the
// initial values are done and the status entry says Complete, then follows
// live entries. It rides out NATS disconnects and server restarts (an
// ordered consumer that resumes after the last entry delivered), and a
// Source started with SourceOptions.Revision (a pod that kept its
// Collection, or restored it with that revision) resumes from there.
// When the history no longer reaches back to that revision (delete markers
// removed by CompactDeletes, recorded in Status.HistoryFrom; a bucket made
// anew) it reloads the bucket as a resync: the Collection's listeners hear
// exactly the differences.
//
// A fleet replica lags its relay's replica by one JetStream round trip;
// for everything else it inherits the store's contract (see package store)
// from the relay's replica. Divergence between the bucket and Directus
// lasts as long as the relay's replica's, plus, during a hand-over, the
// time the new leader takes to win the lease (about LeaseTTL) and re-read
// Directus.
//
// # Dependencies
//
// The package links nats.go (its jetstream package), never nats-server:
// the embedded server of the tests and examples is in an internal package.
package relay
