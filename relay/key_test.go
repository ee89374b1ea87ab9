package relay

import (
	"regexp"
	"strings"
	"testing"
)

var natsKey = regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)

func TestKeyEncodingRoundTripsAndStaysInTheNATSCharset(t *testing.T) {
	cases := map[string]string{
		"1521":                                 "1521",
		"-7":                                   "-7",
		"3f2a9c1e-0b1d-4c5e-9f00-1234567890ab": "3f2a9c1e-0b1d-4c5e-9f00-1234567890ab",
		"my_slug":                              "my_slug",
		"":                                     "=",
		"a.b":                                  "=YS5i",
		"héllo wörld":                          "",
		"_relay.status":                        "",
		"*":                                    "",
		">":                                    "",
		"=x":                                   "",
		"1.5e3":                                "",
	}
	seen := map[string]string{}
	for pk, want := range cases {
		k := EncodeKey(pk)
		if want != "" && k != want {
			t.Errorf("EncodeKey(%q) = %q, want %q", pk, k, want)
		}
		if !natsKey.MatchString(k) || strings.HasPrefix(k, ".") || strings.HasSuffix(k, ".") {
			t.Errorf("EncodeKey(%q) = %q, not a NATS KV key", pk, k)
		}
		if !isRowKey(k) || strings.Contains(k, ".") {
			t.Errorf("EncodeKey(%q) = %q may collide with the relay's keys", pk, k)
		}
		if other, dup := seen[k]; dup {
			t.Errorf("%q and %q encode to %q", pk, other, k)
		}
		seen[k] = pk
		back, err := DecodeKey(k)
		if err != nil || back != pk {
			t.Errorf("DecodeKey(%q) = %q, %v, want %q", k, back, err, pk)
		}
	}
	for _, bad := range []string{"=MTIz" /* "123" is plain, never encoded */, "=!!", "a.b", StatusKey} {
		if _, err := DecodeKey(bad); err == nil {
			t.Errorf("DecodeKey(%q) accepted a key EncodeKey never makes", bad)
		}
	}
}

func FuzzKeyEncoding(f *testing.F) {
	for _, s := range []string{"", "1", "a.b", "=", "_relay.status", "\x00\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pk string) {
		k := EncodeKey(pk)
		if !natsKey.MatchString(k) || !isRowKey(k) {
			t.Fatalf("EncodeKey(%q) = %q", pk, k)
		}
		back, err := DecodeKey(k)
		if err != nil || back != pk {
			t.Fatalf("DecodeKey(EncodeKey(%q)) = %q, %v", pk, back, err)
		}
	})
}

func TestNewRefusesBadOptionsAndANewRelayIsNotLeading(t *testing.T) {
	if _, err := New(nil, nil, nil, nil); err == nil {
		t.Fatal("New accepted no manager and no JetStream")
	}
	r := &Relay{}
	if r.Leading() {
		t.Fatal("a relay that never ran says it leads")
	}
}
