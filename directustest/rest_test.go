package directustest_test

import (
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/e41af43e/directus-realtime/directustest"
)

func TestRESTServerEndpoints(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthStrict})
	resp, err := srv.Client().Get(srv.URL() + "/server/ping")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "pong" {
		t.Fatalf("/server/ping: %d %q", resp.StatusCode, b)
	}
	status, body := rest(t, srv, "GET", "/server/info", directustest.AdminToken, "")
	if status != 200 || !contains(body, `"websocket":{"rest":{"authentication":"strict","path":"/websocket"},"graphql":false,"heartbeat":30}`) {
		t.Fatalf("/server/info: %d %s", status, body)
	}
	if status, body := rest(t, srv, "GET", "/server/health", "", ""); status != http.StatusForbidden {
		t.Fatalf("anonymous /server/health: %d %s", status, body)
	}
	if status, body := rest(t, srv, "GET", "/server/health", directustest.AdminToken, ""); status != 200 || string(body) != `{"status":"ok"}` {
		t.Fatalf("/server/health: %d %s", status, body)
	}
	status, body = rest(t, srv, "GET", "/nope", "", "")
	if status != 404 || string(body) != `{"errors":[{"message":"Route /nope doesn't exist.","extensions":{"path":"/nope","code":"ROUTE_NOT_FOUND"}}]}` {
		t.Fatalf("/nope: %d %s", status, body)
	}
	if status, body := rest(t, srv, "GET", "/items/posts", "bad-token", ""); status != 401 ||
		string(body) != `{"errors":[{"message":"Invalid user credentials.","extensions":{"code":"INVALID_CREDENTIALS"}}]}` {
		t.Fatalf("bad token: %d %s", status, body)
	}
}

func TestRESTItems(t *testing.T) {
	srv := newServer(t, nil)
	admin := directustest.AdminToken
	check := func(method, path, body string, wantStatus int, want string) {
		t.Helper()
		status, got := rest(t, srv, method, path, admin, body)
		if status != wantStatus || string(got) != want {
			t.Fatalf("%s %s %s:\n got %d %s\nwant %d %s", method, path, body, status, got, wantStatus, want)
		}
	}
	check("POST", "/items/posts", `{"title":"a","status":"published","views":1}`, 200,
		`{"data":{"id":1,"title":"a","status":"published","views":1}}`)
	check("POST", "/items/posts?fields=id,title", `[{"title":"b","status":"draft","views":2},{"title":"c","status":"published","views":3,"unknown":1}]`, 200,
		`{"data":[{"id":2,"title":"b"},{"id":3,"title":"c"}]}`)
	check("GET", "/items/posts/2", "", 200, `{"data":{"id":2,"title":"b","status":"draft","views":2}}`)
	check("GET", "/items/posts/99", "", 403, `{"errors":[{"message":"You don't have permission to access this.","extensions":{"code":"FORBIDDEN"}}]}`)
	check("GET", "/items/posts?fields=id&sort=-views&limit=2&meta=*", "", 200,
		`{"data":[{"id":3},{"id":2}],"meta":{"total_count":3,"filter_count":3}}`)
	check("GET", "/items/posts?fields[]=id&filter="+url.QueryEscape(`{"status":{"_eq":"published"}}`)+"&meta=filter_count", "", 200,
		`{"data":[{"id":1},{"id":3}],"meta":{"filter_count":2}}`)
	check("GET", "/items/posts?fields=id&filter[views][_gte]=2&filter[status][_neq]=published", "", 200, `{"data":[{"id":2}]}`)
	check("GET", "/items/posts?fields=id&filter[_or][0][id][_eq]=1&filter[_or][1][id][_eq]=3", "", 200, `{"data":[{"id":1},{"id":3}]}`)
	check("GET", "/items/posts?fields=id&limit=1&page=2", "", 200, `{"data":[{"id":2}]}`)
	check("GET", "/items/posts?fields=id&offset=2", "", 200, `{"data":[{"id":3}]}`)
	check("GET", "/items/posts?fields=nope", "", 403,
		`{"errors":[{"message":"You don't have permission to access field \"nope\" in collection \"posts\" or it does not exist. Queried in root.","extensions":{"code":"FORBIDDEN"}}]}`)
	check("GET", "/items/posts?filter="+url.QueryEscape(`{"status":{"_eq":{"a":1}}}`), "", 400,
		`{"errors":[{"message":"Invalid query. The filter value for \"_eq\" has to be a string, number, or boolean.","extensions":{"code":"INVALID_QUERY"}}]}`)
	check("GET", "/items/nothing", "", 403,
		`{"errors":[{"message":"You don't have permission to access collection \"nothing\" or it does not exist. Queried in root.","extensions":{"code":"FORBIDDEN"}}]}`)
	check("PATCH", "/items/posts/1", `{"views":10}`, 200, `{"data":{"id":1,"title":"a","status":"published","views":10}}`)
	check("PATCH", "/items/posts?fields=id,views", `{"keys":[2,3],"data":{"views":20}}`, 200, `{"data":[{"id":2,"views":20},{"id":3,"views":20}]}`)
	check("PATCH", "/items/posts?fields=id,title", `[{"id":1,"title":"A"},{"id":2,"title":"B"}]`, 200, `{"data":[{"id":1,"title":"A"},{"id":2,"title":"B"}]}`)
	check("PATCH", "/items/posts?fields=id,status", `{"query":{"filter":{"status":{"_eq":"draft"}}},"data":{"status":"archived"}}`, 200, `{"data":[{"id":2,"status":"archived"}]}`)
	check("POST", "/items/posts", `{"id":3}`, 400, `{"errors":[{"message":"Value for field \"id\" in collection \"posts\" has to be unique.","extensions":{"code":"RECORD_NOT_UNIQUE"}}]}`)
	check("DELETE", "/items/posts/1", "", 204, "")
	check("DELETE", "/items/posts", `{"keys":[2]}`, 204, "")
	check("DELETE", "/items/posts", `[3]`, 204, "")
	check("GET", "/items/posts", "", 200, `{"data":[]}`)
	check("GET", "/items/directus_users", "", 403, `{"errors":[{"message":"You don't have permission to access this.","extensions":{"code":"FORBIDDEN"}}]}`)
	check("POST", "/items/posts", `{"title":`, 400, `{"errors":[{"message":"Invalid payload. Unexpected token in JSON.","extensions":{"code":"INVALID_PAYLOAD"}}]}`)

	// Permissions: the reader may read posts and nothing else; the Public
	// role may do nothing.
	if status, _ := rest(t, srv, "POST", "/items/posts", directustest.ReaderToken, `{"title":"x"}`); status != 403 {
		t.Fatalf("reader create: %d", status)
	}
	if status, _ := rest(t, srv, "GET", "/items/posts", directustest.ReaderToken, ""); status != 200 {
		t.Fatalf("reader read: %d", status)
	}
	if status, _ := rest(t, srv, "GET", "/items/tags", directustest.ReaderToken, ""); status != 403 {
		t.Fatalf("reader read tags: %d", status)
	}
	if status, _ := rest(t, srv, "GET", "/items/posts", "", ""); status != 403 {
		t.Fatalf("public read: %d", status)
	}
	// ?access_token= works too.
	if status, _ := rest(t, srv, "GET", "/items/posts?access_token="+directustest.ReaderToken, "", ""); status != 200 {
		t.Fatalf("?access_token: %d", status)
	}
}

// REST writes produce the events Directus produces, key types included.
func TestRESTEvents(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"tags","uid":"t"}`)
	c.expect(`{"type":"subscription","event":"init","data":[],"uid":"t"}`)
	_, body := rest(t, srv, "POST", "/items/tags", directustest.AdminToken, `{"id":"k1","name":"x"}`)
	if string(body) != `{"data":{"id":"k1","name":"x"}}` {
		t.Fatalf("create: %s", body)
	}
	c.expect(`{"type":"subscription","event":"create","data":[{"id":"k1","name":"x"}],"uid":"t"}`)
	rest(t, srv, "PATCH", "/items/tags/k1", directustest.AdminToken, `{"name":"y"}`)
	c.expect(`{"type":"subscription","event":"update","data":[{"id":"k1","name":"y"}],"uid":"t"}`)
	rest(t, srv, "DELETE", "/items/tags", directustest.AdminToken, `["k1","k2"]`)
	c.expect(`{"type":"subscription","event":"delete","data":["k1","k2"],"uid":"t"}`)
}

// A delete that names no key (an empty array, a query matching nothing,
// items delete with empty ids) sends no frame: Directus skips events whose
// data is an empty array (found by the conformance suite against 12.4.1).
func TestEmptyDeleteSendsNothing(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"posts","uid":"all","query":{"fields":["id"]}}`)
	c.expect(`{"type":"subscription","event":"init","data":[],"uid":"all"}`)
	if status, body := rest(t, srv, "DELETE", "/items/posts", directustest.AdminToken, `[]`); status != 204 {
		t.Fatalf("DELETE []: %d %s", status, body)
	}
	if status, body := rest(t, srv, "DELETE", "/items/posts", directustest.AdminToken, `{"query":{"filter":{"id":{"_lt":0}}}}`); status != 204 {
		t.Fatalf("DELETE by query: %d %s", status, body)
	}
	c.send(`{"type":"items","collection":"posts","action":"delete","ids":[],"uid":"d0"}`)
	c.expect(`{"type":"items","data":[],"uid":"d0"}`)
	c.expectNothing()
}

// Deletes reach identities that cannot read the collection, but a
// subscription whose query asks for meta gets FORBIDDEN instead: Directus
// computes meta with the subscriber's identity (found by the conformance
// suite against 12.4.1, public mode).
func TestDeleteWithMetaWithoutReadPermission(t *testing.T) {
	srv := newServer(t, &directustest.Options{AuthMode: directustest.AuthPublic, HeartbeatPeriod: -1})
	c := mustDial(t, srv.WebSocketURL())
	c.send(`{"type":"subscribe","collection":"posts","uid":"del","event":"delete","query":{"meta":"total_count"}}`)
	c.expect(`{"type":"subscription","event":"init","uid":"del"}`)
	c.send(`{"type":"subscribe","collection":"posts","uid":"plain","event":"delete"}`)
	c.expect(`{"type":"subscription","event":"init","uid":"plain"}`)
	rest(t, srv, "DELETE", "/items/posts/1", directustest.AdminToken, "")
	c.expect(`{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to perform \"read\" for collection \"posts\" or it does not exist."},"uid":"del"}`)
	c.expect(`{"type":"subscription","event":"delete","data":["1"],"uid":"plain"}`)
	// Even a delete that names no key: the error comes before the check
	// for empty data.
	rest(t, srv, "DELETE", "/items/posts", directustest.AdminToken, `[]`)
	c.expect(`{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to perform \"read\" for collection \"posts\" or it does not exist."},"uid":"del"}`)
	c.expectNothing()

	// With read permission the delete carries meta.
	a := authClient(t, srv)
	a.send(`{"type":"subscribe","collection":"posts","uid":"del","event":"delete","query":{"meta":"total_count"}}`)
	a.expect(`{"type":"subscription","event":"init","uid":"del"}`)
	rest(t, srv, "DELETE", "/items/posts", directustest.AdminToken, `[2]`)
	a.expect(`{"type":"subscription","event":"delete","data":[2],"meta":{"total_count":0},"uid":"del"}`)
}
