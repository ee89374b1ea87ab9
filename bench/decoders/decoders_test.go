package decoders

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/bytedance/sonic"
	gojson "github.com/goccy/go-json"
	segjson "github.com/segmentio/encoding/json"
)

// Post is harness.Post, the rows of every benchmark of bench/.
type Post struct {
	ID     int64  `json:"id"`
	Title  string `json:"title"`
	Status string `json:"status"`
	Views  int64  `json:"views"`
}

type decoder struct {
	name      string
	unmarshal func([]byte, any) error
}

var decoders = []decoder{
	{"json-v1", json.Unmarshal},
	{"goccy", gojson.Unmarshal},
	{"sonic-std", sonic.ConfigStd.Unmarshal},
	{"segmentio", segjson.Unmarshal},
}

func rows(n int) []byte {
	var b strings.Builder
	b.WriteByte('[')
	statuses := []string{"draft", "published", "archived"}
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"title":"post %d lorem","status":%q,"views":%d,"date_created":"2026-11-23T06:13:00.000Z"}`, i+1, i+1, statuses[i%3], i*7919%1000000)
	}
	b.WriteByte(']')
	return []byte(b.String())
}

func BenchmarkRows(b *testing.B) {
	for _, n := range []int{1, 50, 100_000} {
		data := rows(n)
		for _, d := range decoders {
			b.Run(fmt.Sprintf("%d/%s", n, d.name), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for range b.N {
					var out []Post
					if err := d.unmarshal(data, &out); err != nil || len(out) != n {
						b.Fatal(err, len(out))
					}
				}
			})
		}
	}
}

// hostile are inputs on which a decoder must agree with encoding/json:
// accept what it accepts (with the same rows), refuse what it refuses.
var hostile = []string{
	`[{"id":1,"title":"a"}]`,
	`[{"id":1,"title":"a"}] x`,
	`[{"id":1,"title":"a"},]`,
	`[{"id":1,"title":"\ud800"}]`,
	"[{\"id\":1,\"title\":\"\xff\xfe\"}]",
	"[{\"id\":1,\"title\":\"a\x01b\"}]",
	`[{"id":1,"title":"\x41"}]`,
	`[{"id":1.5}]`,
	`[{"id":1e400}]`,
	`[{"id":99999999999999999999}]`,
	`[{"id":-0}]`,
	`[{"id":01}]`,
	`[{"id":"1"}]`,
	`[{"id":1,"id":2}]`,
	`[{"ID":3}]`,
	`[{"id":null,"title":null}]`,
	`[{"id":1,"title":"a","extra":{"deep":[[[[[[[[]]]]]]]]}}]`,
	`[{"id":1,"title":"a","extra":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}]`,
	`[{"id":1,"title":"a\u0000b"}]`,
	`[{"id":tru}]`,
	`[{"id":1}`,
	`{"id":1}`,
	`null`,
	``,
}

func TestHostile(t *testing.T) {
	for _, d := range decoders[1:] {
		bad := 0
		for _, in := range hostile {
			var want, got []Post
			werr := json.Unmarshal([]byte(in), &want)
			gerr := d.unmarshal([]byte(in), &got)
			same := (werr == nil) == (gerr == nil) && (werr != nil || fmt.Sprint(want) == fmt.Sprint(got))
			if !same {
				bad++
				t.Logf("%s differs on %.60q: json-v1 %v %v, %s %v %v", d.name, in, want, werr, d.name, got, gerr)
			}
		}
		t.Logf("%s: %d of %d hostile inputs differ from encoding/json", d.name, bad, len(hostile))
	}
}
