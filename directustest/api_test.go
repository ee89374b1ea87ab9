package directustest_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/e41af43e/directus-realtime/directustest"
)

// Go writes emit exactly the events of the equivalent REST calls; the key
// types given to Delete and Update are what the events carry.
func TestGoWrites(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"posts","uid":"all","query":{"fields":["id","title"]}}`)
	c.expect(`{"type":"subscription","event":"init","data":[],"uid":"all"}`)

	rows, err := srv.Create("posts", map[string]any{"title": "a", "views": 1}, map[string]any{"title": "b"})
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"id": int64(1), "title": "a", "status": nil, "views": int64(1)},
		{"id": int64(2), "title": "b", "status": nil, "views": nil},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("Create returned %v", rows)
	}
	c.expect(`{"type":"subscription","event":"create","data":[{"id":1,"title":"a"}],"uid":"all"}`)
	c.expect(`{"type":"subscription","event":"create","data":[{"id":2,"title":"b"}],"uid":"all"}`)

	c.send(`{"type":"subscribe","collection":"posts","item":2,"uid":"one"}`)
	c.expect(`{"type":"subscription","event":"init","data":{"id":2,"title":"b","status":null,"views":null},"uid":"one"}`)

	// Numeric keys do not reach the single-item subscription (R7).
	if _, err := srv.Update("posts", []any{2}, map[string]any{"title": "B"}); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscription","event":"update","data":[{"id":2,"title":"B"}],"uid":"all"}`)
	c.expectNothing()
	// String keys do (R3).
	if _, err := srv.Update("posts", []any{"2"}, map[string]any{"views": 5}); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscription","event":"update","data":[{"id":2,"title":"B"}],"uid":"all"}`)
	c.expect(`{"type":"subscription","event":"update","data":{"id":2,"title":"B","status":null,"views":5},"uid":"one"}`)

	// Quiet writes emit nothing.
	if _, err := srv.Quiet().Create("posts", map[string]any{"title": "q"}); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Quiet().Update("posts", []any{3}, map[string]any{"title": "Q"}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Quiet().Delete("posts", 3); err != nil {
		t.Fatal(err)
	}
	c.expectNothing()

	// Delete carries the keys as given, and a string key reaches "one".
	if err := srv.Delete("posts", 1, "2"); err != nil {
		t.Fatal(err)
	}
	c.expect(`{"type":"subscription","event":"delete","data":[1,"2"],"uid":"all"}`)
	c.expect(`{"type":"subscription","event":"delete","data":"2","uid":"one"}`)
	if got := srv.Items("posts"); len(got) != 0 {
		t.Fatalf("Items = %v", got)
	}
	if _, err := srv.Create("nope", map[string]any{}); err == nil {
		t.Fatal("Create in an unknown collection succeeded")
	}
}

func TestItemsAreCopies(t *testing.T) {
	srv := newServer(t, nil)
	if _, err := srv.Create("posts", map[string]any{"id": 10, "title": "x"}, map[string]any{"id": 5, "title": "y"}); err != nil {
		t.Fatal(err)
	}
	items := srv.Items("posts")
	if items[0]["id"] != int64(5) || items[1]["id"] != int64(10) {
		t.Fatalf("not sorted by key: %v", items)
	}
	items[0]["title"] = "changed"
	got, ok := srv.Item("posts", "5")
	if !ok || got["title"] != "y" {
		t.Fatalf("Item = %v %v", got, ok)
	}
	// The auto-increment continues after the largest key.
	rows, _ := srv.Create("posts", map[string]any{})
	if rows[0]["id"] != int64(11) {
		t.Fatalf("next id %v", rows[0]["id"])
	}
}

func TestCustomModel(t *testing.T) {
	srv := newServer(t, &directustest.Options{Empty: true, AuthMode: directustest.AuthPublic})
	if srv.Items("posts") != nil {
		t.Fatal("Empty server has posts")
	}
	if err := srv.AddCollection(directustest.Collection{Name: "codes", PrimaryKey: "code", KeyType: directustest.StringKey, Fields: []string{"label"}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddCollection(directustest.Collection{Name: "codes"}); err == nil {
		t.Fatal("duplicate collection accepted")
	}
	if err := srv.AddCollection(directustest.Collection{Name: "directus_x"}); err == nil {
		t.Fatal("system collection name accepted")
	}
	if err := srv.AddUser(directustest.User{Email: "w@example.com", Token: "w-token", Permissions: map[string]directustest.Permission{"codes": {Read: true, Create: true}}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddUser(directustest.User{Email: "W@example.com"}); err == nil {
		t.Fatal("duplicate user accepted")
	}
	if _, err := srv.Create("codes", map[string]any{"label": "no key"}); err == nil {
		t.Fatal("string key not required")
	}

	c := mustDial(t, srv.WebSocketURL())
	c.send(`{"type":"subscribe","collection":"codes","uid":"c"}`)
	c.expect(`{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access collection \"codes\" or it does not exist. Queried in root."},"uid":"c"}`)
	srv.SetPublicPermissions(map[string]directustest.Permission{"codes": {Read: true}})
	c.send(`{"type":"subscribe","collection":"codes","uid":"c"}`)
	c.expect(`{"type":"subscription","event":"init","data":[],"uid":"c"}`)
	c.send(`{"type":"items","collection":"codes","action":"create","data":{"code":"x"},"uid":1}`)
	c.expect(`{"type":"items","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access collection \"codes\" or it does not exist. Queried in root."},"uid":1}`)
	c.send(`{"type":"auth","access_token":"w-token"}`)
	c.expect(`{"type":"auth","status":"ok"}`)
	c.send(`{"type":"items","collection":"codes","action":"create","data":{"code":"x","label":"X"},"uid":2}`)
	c.expect(`{"type":"subscription","event":"create","data":[{"code":"x","label":"X"}],"uid":"c"}`)
	c.expect(`{"type":"items","data":{"code":"x","label":"X"},"uid":2}`)

	subs := srv.Subscriptions()
	if len(subs) != 1 || subs[0].UID != "c" || subs[0].Collection != "codes" || subs[0].Query != nil {
		t.Fatalf("Subscriptions = %+v", subs)
	}
}

func TestSubscriptionsInfo(t *testing.T) {
	srv := newServer(t, nil)
	c := authClient(t, srv)
	c.send(`{"type":"subscribe","collection":"posts","uid":42,"query":{"fields":["id"]}}`)
	c.next()
	c.send(`{"type":"subscribe","collection":"posts","event":"delete","item":"7"}`)
	c.next()
	got := srv.Subscriptions()
	want := []directustest.SubscriptionInfo{
		{Conn: got[0].Conn, UID: "42", Collection: "posts", Query: json.RawMessage(`{"fields":["id"]}`)},
		{Conn: got[0].Conn, Collection: "posts", Item: "7", Event: "delete"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Subscriptions = %+v", got)
	}
	c.send(`{"type":"unsubscribe"}`)
	c.expect(`{"type":"subscription","event":"unsubscribe"}`)
	if n := len(srv.Subscriptions()); n != 0 {
		t.Fatalf("%d subscriptions left", n)
	}
}

// OnFrame sees every frame in both directions.
func TestOnFrame(t *testing.T) {
	frames := make(chan directustest.Frame, 10)
	srv := newServer(t, &directustest.Options{OnFrame: func(f directustest.Frame) { frames <- f }})
	c := authClient(t, srv)
	in, out := <-frames, <-frames
	if !in.Inbound || out.Inbound || string(out.Data) != `{"type":"auth","status":"ok"}` || in.Conn != out.Conn || in.Conn == 0 {
		t.Fatalf("frames %+v %+v", in, out)
	}
	_ = c
}
