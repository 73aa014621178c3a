package vm

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseTestJSON(t *testing.T) {
	stream := `{"Action":"start","Package":"x/a"}
{"Action":"run","Package":"x/a","Test":"TestOne"}
{"Action":"output","Package":"x/a","Test":"TestOne","Output":"=== RUN   TestOne\n"}
{"Action":"pass","Package":"x/a","Test":"TestOne/sub"}
{"Action":"pass","Package":"x/a","Test":"TestOne"}
{"Action":"fail","Package":"x/a","Test":"TestTwo"}
{"Action":"skip","Package":"x/a","Test":"TestThree"}
{"Action":"output","Package":"x/a","Output":"FAIL\n"}
{"Action":"fail","Package":"x/a"}
{"Action":"output","Package":"x/b","Output":"?   \tx/b\t[no test files]\n"}
{"Action":"skip","Package":"x/b"}
{"Action":"pass","Package":"x/c","Test":"TestA"}
{"Action":"skip","Package":"x/c","Test":"TestB"}
{"Action":"pass","Package":"x/c"}
not json
`
	res, err := ParseTestJSON(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	for pkg, want := range map[string]string{
		"x/a": "FAIL (1 failed, 1 passed)",
		"x/b": "skip (no test files)",
		"x/c": "pass (1 passed, 1 skipped)",
	} {
		if got := res[pkg].Cell(); got != want {
			t.Errorf("%s: %q, want %q", pkg, got, want)
		}
	}
	if !strings.Contains(res["x/a"].Output.String(), "=== RUN   TestOne") {
		t.Errorf("output of x/a not kept: %q", res["x/a"].Output.String())
	}
	var b bytes.Buffer
	FormatMatrix(&b, []string{"6.1", "6.12"}, []string{"x/c", "x/a"}, map[string]map[string]string{
		"6.1":  {"x/a": "pass (1 tests)", "x/c": "FAIL (1 failed, 0 passed)"},
		"6.12": {"x/a": "pass (1 tests)"},
	})
	want := "package  6.1                        6.12          \n" +
		"x/a      pass (1 tests)             pass (1 tests)\n" +
		"x/c      FAIL (1 failed, 0 passed)  -             \n"
	if b.String() != want {
		t.Errorf("matrix\n%s\nwant\n%s", b.String(), want)
	}
}
