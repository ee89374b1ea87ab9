package directustest_test

import (
	"testing"

	"github.com/e41af43e/directus-realtime/directustest"
)

func seedPosts(t *testing.T, srv *directustest.Server) {
	t.Helper()
	_, err := srv.Quiet().Create("posts",
		map[string]any{"title": "alpha", "status": "published", "views": 10},
		map[string]any{"title": "beta", "status": "draft", "views": 5},
		map[string]any{"title": "gamma", "status": "published", "views": nil},
		map[string]any{"title": "delta", "status": nil, "views": 7},
	)
	if err != nil {
		t.Fatal(err)
	}
}

func TestQueryFilters(t *testing.T) {
	srv := newServer(t, nil)
	seedPosts(t, srv)
	c := authClient(t, srv)
	cases := []struct{ query, want string }{
		{`{"fields":["id"],"filter":{"status":{"_eq":"published"}}}`, `[{"id":1},{"id":3}]`},
		{`{"fields":["id"],"filter":{"status":{"_neq":"published"}}}`, `[{"id":2}]`}, // NULL matches no comparison
		{`{"fields":["id"],"filter":{"status":{"_null":true}}}`, `[{"id":4}]`},
		{`{"fields":["id"],"filter":{"views":{"_nnull":true}}}`, `[{"id":1},{"id":2},{"id":4}]`},
		{`{"fields":["id"],"filter":{"views":{"_gt":5}}}`, `[{"id":1},{"id":4}]`},
		{`{"fields":["id"],"filter":{"views":{"_gte":"7"}}}`, `[{"id":1},{"id":4}]`},
		{`{"fields":["id"],"filter":{"views":{"_lt":7}}}`, `[{"id":2}]`},
		{`{"fields":["id"],"filter":{"views":{"_lte":7}}}`, `[{"id":2},{"id":4}]`},
		{`{"fields":["id"],"filter":{"id":{"_in":[1,"4"]}}}`, `[{"id":1},{"id":4}]`},
		{`{"fields":["id"],"filter":{"id":{"_nin":[1,4]}}}`, `[{"id":2},{"id":3}]`},
		{`{"fields":["id"],"filter":{"title":{"_contains":"lt"}}}`, `[{"id":4}]`},
		{`{"fields":["id"],"filter":{"title":{"_icontains":"ALP"}}}`, `[{"id":1}]`},
		{`{"fields":["id"],"filter":{"title":{"_starts_with":"g"}}}`, `[{"id":3}]`},
		{`{"fields":["id"],"filter":{"views":{"_between":[5,7]}}}`, `[{"id":2},{"id":4}]`},
		{`{"fields":["id"],"filter":{"_or":[{"id":{"_eq":1}},{"status":{"_eq":"draft"}}]}}`, `[{"id":1},{"id":2}]`},
		{`{"fields":["id"],"filter":{"_and":[{"status":{"_eq":"published"}},{"views":{"_gt":1}}]}}`, `[{"id":1}]`},
		{`{"fields":["id"],"filter":{"status":{"_eq":"published"},"views":{"_nnull":true}}}`, `[{"id":1}]`},
		{`{"fields":["id","title"],"sort":["-views","title"],"limit":2}`, `[{"id":1,"title":"alpha"},{"id":4,"title":"delta"}]`},
		{`{"fields":["title"],"sort":"status,-id"}`, `[{"title":"delta"},{"title":"beta"},{"title":"gamma"},{"title":"alpha"}]`}, // NULL first
		{`{"fields":"id","limit":2,"page":2}`, `[{"id":3},{"id":4}]`},
		{`{"fields":["id"],"offset":3,"limit":-1}`, `[{"id":4}]`},
		{`{"fields":["status","id","status"]}`, `[{"status":"published","id":1},{"status":"draft","id":2},{"status":"published","id":3},{"status":null,"id":4}]`},
	}
	for i, tc := range cases {
		c.send(`{"type":"items","collection":"posts","action":"read","uid":` + itoa(i) + `,"query":` + tc.query + `}`)
		c.expect(`{"type":"items","data":` + tc.want + `,"uid":` + itoa(i) + `}`)
	}
}

func TestQueryErrors(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	fieldErr := func(f string) string {
		return `{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access field \"` + f + `\" in collection \"posts\" or it does not exist. Queried in root."},"uid":"e"}`
	}
	cases := []struct{ msg, want string }{
		{`{"type":"subscribe","collection":"posts","uid":"e","query":{"fields":["nope"]}}`, fieldErr("nope")},
		{`{"type":"subscribe","collection":"posts","uid":"e","query":{"sort":["-nope"]}}`, fieldErr("nope")},
		{`{"type":"subscribe","collection":"posts","uid":"e","query":{"filter":{"_or":[{"nope":{"_eq":1}}]}}}`, fieldErr("nope")},
		{`{"type":"subscribe","collection":"posts","uid":"e","query":{"filter":{"id":{"_in":5}}}}`,
			`{"type":"subscribe","status":"error","error":{"code":"INVALID_QUERY","message":"Invalid query. The filter value for \"_in\" has to be an array of values."},"uid":"e"}`},
		{`{"type":"subscribe","collection":"posts","uid":"e","query":{"filter":{"id":{"_bogus":5}}}}`,
			`{"type":"subscribe","status":"error","error":{"code":"INVALID_QUERY","message":"Invalid query. Invalid filter operator \"_bogus\"."},"uid":"e"}`},
		{`{"type":"subscribe","collection":"posts","uid":"e","query":[]}`,
			`{"type":"subscribe","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected record, received array at \"query\""}}`},
		{`{"type":"subscribe","collection":"posts","uid":"e","item":true}`,
			`{"type":"subscribe","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected string, received boolean at \"item\" or Invalid input: expected number, received boolean at \"item\""}}`},
		{`{"type":"subscribe","collection":"posts","uid":"e","item":999}`,
			`{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access this."},"uid":"e"}`},
		{`{"type":"ping","uid":true}`,
			`{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected string, received boolean at \"uid\" or Invalid input: expected number, received boolean at \"uid\""}}`},
		{`{"type":5}`, `{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected string, received number at \"type\""}}`},
		{`null`, `{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: Invalid input: expected object, received null"}}`},
	}
	for _, tc := range cases {
		c.send(tc.msg)
		c.expect(tc.want)
	}
}

// Subscription events are re-read through the query: filters decide
// whether a frame is sent at all, meta is attached to every frame, and
// deletes are neither filtered nor checked.
func TestSubscriptionEvents(t *testing.T) {
	srv := newServer(t, nil)
	seedPosts(t, srv)
	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"posts","uid":"pub","query":{"fields":["id","views"],"filter":{"status":{"_eq":"published"}},"meta":"*"}}`)
	c.expect(`{"type":"subscription","event":"init","data":[{"id":1,"views":10},{"id":3,"views":null}],"meta":{"total_count":4,"filter_count":2},"uid":"pub"}`)
	c.send(`{"type":"subscribe","collection":"posts","event":"update","uid":"upd","query":{"fields":["id"]}}`)
	c.expect(`{"type":"subscription","event":"init","uid":"upd"}`)

	if _, err := srv.Update("posts", []any{1, 2, 3}, map[string]any{"views": 1}); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscription","event":"update","data":[{"id":1,"views":1},{"id":3,"views":1}],"meta":{"total_count":4,"filter_count":2},"uid":"pub"}`)
	c.expect(`{"type":"subscription","event":"update","data":[{"id":1},{"id":2},{"id":3}],"uid":"upd"}`)
	// Leaves the filter: no frame for pub.
	if _, err := srv.Update("posts", []any{"1"}, map[string]any{"status": "draft"}); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscription","event":"update","data":[{"id":1}],"uid":"upd"}`)
	c.expectNothing()
	// Created draft: nothing at all (upd is update-only).
	if _, err := srv.Create("posts", map[string]any{"status": "draft"}); err != nil {
		t.Fatal(err)
	}
	c.expectNothing()
	// Deletes reach pub even for rows that never matched.
	if err := srv.Delete("posts", 2); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscription","event":"delete","data":[2],"meta":{"total_count":4,"filter_count":1},"uid":"pub"}`)
	// Same uid again replaces the subscription.
	c.send(`{"type":"subscribe","collection":"posts","uid":"pub","event":"create"}`)
	c.expect(`{"type":"subscription","event":"init","uid":"pub"}`)
	if _, err := srv.Create("posts", map[string]any{"title": "new"}); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscription","event":"create","data":[{"id":6,"title":"new","status":null,"views":null}],"uid":"pub"}`)
	c.expectNothing()
}

// An item subscription whose item stops matching its filter gets FORBIDDEN
// frames (readOne fails), with the uid.
func TestItemSubscriptionFilter(t *testing.T) {
	srv := newServer(t, nil)
	seedPosts(t, srv)
	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"posts","item":"1","uid":"one","query":{"fields":["title"],"filter":{"status":{"_eq":"published"}}}}`)
	c.expect(`{"type":"subscription","event":"init","data":{"title":"alpha"},"uid":"one"}`)
	if _, err := srv.Update("posts", []any{"1"}, map[string]any{"status": "draft"}); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access this."},"uid":"one"}`)
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}
