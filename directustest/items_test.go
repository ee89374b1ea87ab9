package directustest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// Branches of the items message beyond the transcript (docs/PROTOCOL.md §6).
func TestItemsActions(t *testing.T) {
	srv := newServer(t, nil)
	seedPosts(t, srv)
	c := authClient(t, srv)
	steps := []struct{ send, want string }{
		{`{"type":"items","collection":"posts","action":"update","data":[{"id":1,"views":100},{"id":2,"views":200}],"query":{"fields":["id","views"]},"uid":"b"}`,
			`{"type":"items","data":[{"id":1,"views":100},{"id":2,"views":200}],"uid":"b"}`},
		{`{"type":"items","collection":"posts","action":"update","query":{"filter":{"views":{"_gte":100}},"fields":["id"]},"data":{"status":"hot"},"uid":"q"}`,
			`{"type":"items","data":[{"id":1},{"id":2}],"uid":"q"}`},
		{`{"type":"items","collection":"posts","action":"update","data":{"status":"x"},"uid":"none"}`,
			`{"type":"items","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Either 'ids', 'id' or 'query' is required for a UPDATE request."},"uid":"none"}`},
		{`{"type":"items","collection":"posts","action":"update","id":1,"uid":"nodata"}`,
			`{"type":"items","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected object, received undefined at \"data\""},"uid":"nodata"}`},
		{`{"type":"items","collection":"posts","action":"delete","query":{"filter":{"status":{"_eq":"hot"}}},"uid":"dq"}`,
			`{"type":"items","data":[1,2],"uid":"dq"}`},
		{`{"type":"items","collection":"posts","action":"read","ids":["3",4,99],"query":{"fields":["id"]},"uid":"r"}`,
			`{"type":"items","data":[{"id":3},{"id":4}],"uid":"r"}`},
		{`{"type":"items","action":"read","uid":7}`,
			`{"type":"items","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected string, received undefined at \"collection\""},"uid":7}`},
		{`{"type":"items","collection":"posts","action":"create","data":{"id":3},"uid":"dup"}`,
			`{"type":"items","status":"error","error":{"code":"RECORD_NOT_UNIQUE","message":"Value for field \"id\" in collection \"posts\" has to be unique."},"uid":"dup"}`},
		{`{"type":"items","collection":"posts","action":"create","data":[1,2],"uid":"arr"}`,
			`{"type":"items","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected object, received array at \"data\""},"uid":"arr"}`},
		{`{"type":"items","collection":"posts","action":"read","query":{"fields":["id"],"limit":1,"meta":["total_count"]},"uid":"m"}`,
			`{"type":"items","data":[{"id":3}],"meta":{"total_count":2},"uid":"m"}`},
	}
	for _, s := range steps {
		c.send(s.send)
		c.expect(s.want)
	}
	c.expectNothing()
}

// Nothing the network sends may crash the server or wedge the connection.
func TestHostileFrames(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	frames := []string{
		``, ` `, `{`, `}`, `[]`, `{}`, `0`, `1e999`, `"\ud800"`, `{"type":null}`, `{"type":"ping","uid":1e999}`,
		`{"type":"ping","uid":{"a":1}}`, `{"type":"ping","uid":[1]}`, `{"type":"ping","uid":-0.5}`,
		`{"type":"subscribe"}`, `{"type":"subscribe","collection":null}`, `{"type":"subscribe","collection":"posts","event":null}`,
		`{"type":"subscribe","collection":"posts","query":{"filter":"x"}}`,
		`{"type":"subscribe","collection":"posts","query":{"filter":{"_and":"x"}}}`,
		`{"type":"subscribe","collection":"posts","query":{"filter":{"_or":[1,2]}}}`,
		`{"type":"subscribe","collection":"posts","query":{"filter":{"id":{"_between":[1]}}}}`,
		`{"type":"subscribe","collection":"posts","query":{"fields":[1],"limit":"x"}}`,
		`{"type":"subscribe","collection":"posts","query":{"limit":1.5,"offset":[],"page":{}}}`,
		`{"type":"subscribe","collection":"posts","query":{"sort":[null],"meta":5}}`,
		`{"type":"subscribe","collection":"posts","query":{"filter":{"title":{"nested":{"_eq":1}}}}}`,
		`{"type":"items","collection":"posts","action":"create","data":"x"}`,
		`{"type":"items","collection":"posts","action":"create","data":null}`,
		`{"type":"items","collection":"posts","action":"create","data":{"id":"abc"}}`,
		`{"type":"items","collection":"posts","action":"create","data":{"id":1.5}}`,
		`{"type":"items","collection":"posts","action":"update","data":[{"title":"no key"}]}`,
		`{"type":"items","collection":"posts","action":"update","data":[1]}`,
		`{"type":"items","collection":"posts","action":"read","id":{"x":1}}`,
		`{"type":"items","collection":"posts","action":"read","ids":"x"}`,
		`{"type":"items","collection":"posts","action":"read","ids":[[1]]}`,
		`{"type":"items","collection":"posts","action":"delete","ids":[]}`,
		`{"type":"items","collection":["posts"],"action":"read"}`,
		`{"type":"items","collection":"posts","action":5}`,
		`{"type":"unsubscribe","uid":null}`,
		`{"type":"auth"}`, `{"type":"auth","access_token":5}`, `{"type":"auth","email":"x","password":"y"}`,
		strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000),
		`{"type":"items","collection":"posts","action":"create","data":{"title":"` + strings.Repeat("\\u0000", 1000) + `"}}`,
	}
	for _, f := range frames {
		c.send(f)
		if strings.HasPrefix(f, `{"type":"auth"`) {
			// A failed re-auth closes the connection, as on Directus.
			c.expect(`{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication failed."}}`)
			if _, closed := c.waitClosed(frameTimeout); !closed {
				t.Fatalf("still open after %q", f)
			}
			c = authClient(t, srv)
			continue
		}
		// The connection still answers.
		c.send(`{"type":"ping","uid":"alive"}`)
		for {
			got, ok := c.nextFrame(frameTimeout)
			if !ok {
				t.Fatalf("no answer after %q (closed: %v)", f, c.closeErr())
			}
			if string(got) == `{"type":"pong","uid":"alive"}` {
				break
			}
		}
	}
	// Binary frames are read like text frames.
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, []byte(`{"type":"ping","uid":"bin"}`)); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"pong","uid":"bin"}`)
	c.expectNothing()
}
