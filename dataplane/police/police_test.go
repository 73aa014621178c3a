package police

import "testing"

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{Drop: "drop", RST: "rst", 7: "action(7)"} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", uint8(a), got, want)
		}
	}
}
