package transcript

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for name, steps := range map[string][]Step{"sqlite": SQLite(), "postgres": Postgres()} {
		if len(steps) < 60 {
			t.Fatalf("%s: %d steps, want the ~70 of the recording", name, len(steps))
		}
		r8, ok := Find(steps, "R8")
		if !ok {
			t.Fatalf("%s: no step R8", name)
		}
		got := r8.Frames(ServerToClient, "A")
		if len(got) != 4 || !strings.Contains(got[0], `"event":"delete"`) {
			t.Fatalf("%s: R8 frames = %q", name, got)
		}
		frames := ServerFrames(steps)
		if len(frames) < 150 {
			t.Fatalf("%s: %d server frames", name, len(frames))
		}
		for _, f := range frames {
			if !json.Valid([]byte(f)) {
				t.Errorf("%s: server frame is not JSON: %q", name, f)
			}
		}
	}
}
