package jsonskip

import "testing"

func TestValue(t *testing.T) {
	for _, c := range []struct {
		in   string
		at   int
		want int
	}{
		{`"a\"b",1`, 0, 6},
		{`{"a":[1,{"b":"}"}]} x`, 0, 19},
		{`[1, 2]`, 0, 6},
		{`-12.5e3,`, 0, 7},
		{`true}`, 0, 4},
		{`x,"ab`, 2, 5},  // an unterminated string ends at len(b)
		{`"ab\`, 0, 4},   // an escape at the very end does not read past b
		{`{"a":[`, 0, 6}, // nor an unclosed object
		{`1`, 5, 1},      // nor a start past the end
	} {
		if got := Value([]byte(c.in), c.at); got != c.want {
			t.Errorf("Value(%q, %d) = %d, want %d", c.in, c.at, got, c.want)
		}
	}
}
