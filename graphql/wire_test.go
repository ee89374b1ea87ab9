package graphql

import (
	"encoding/json"
	"testing"

	"github.com/e41af43e/directus-realtime/handlers"
)

func TestSubscriptionQuery(t *testing.T) {
	for _, c := range []struct {
		event string
		want  string
	}{
		{"", "subscription { posts_mutated { key event data { id title } } }"},
		{"delete", "subscription { posts_mutated(event: delete) { key event data { id title } } }"},
	} {
		if got := subscriptionQuery("posts", c.event, []string{"id", "title"}); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestParseNext(t *testing.T) {
	kind, key, data, err := parseNext(json.RawMessage(`{"data":{"posts_mutated":{"key":"3","event":"update","data":{"id":"3"}}}}`), "posts")
	if err != nil || kind != handlers.KindUpdate || string(key) != `"3"` || string(data) != `{"id":"3"}` {
		t.Fatalf("%v %s %s %v", kind, key, data, err)
	}
	for _, bad := range []string{
		`{"data":{"tags_mutated":{"key":"3","event":"create","data":{}}}}`,
		`{"data":{"posts_mutated":{"key":"3","event":"init","data":{}}}}`,
		`{"data":{"posts_mutated":{"key":{"a":1},"event":"create","data":{}}}}`,
		`{"data":{"posts_mutated":[]}}`,
		`{"data":null,"errors":[{"message":"x"}]}`,
		`[`,
	} {
		if _, _, _, err := parseNext(json.RawMessage(bad), "posts"); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// Nothing the network sends makes parsing panic.
func FuzzParseNext(f *testing.F) {
	f.Add([]byte(`{"data":{"posts_mutated":{"key":"3","event":"create","data":{"id":"3"}}}}`))
	f.Add([]byte(`{"data":{"posts_mutated":{"key":1,"event":"delete","data":null}}}`))
	f.Add([]byte(`{"errors":[{"message":"m"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, key, _, err := parseNext(json.RawMessage(b), "posts")
		if err == nil && (kind < handlers.KindCreate || kind > handlers.KindDelete || !isScalarKey(key)) {
			t.Fatalf("accepted %q as %v key %s", b, kind, key)
		}
		r := &replicaState{opts: ReplicaOptions{KeyField: "id"}}
		ev := handlers.Event{Kind: kind, Data: wrap(key)}
		r.normalize(&ev)
	})
}

func TestIsName(t *testing.T) {
	for s, want := range map[string]bool{"posts": true, "_a1": true, "1a": false, "": false, "a-b": false, "a.b": false, "é": false} {
		if isName(s) != want {
			t.Errorf("isName(%q) = %v", s, !want)
		}
	}
}
