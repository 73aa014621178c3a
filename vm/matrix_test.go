package vm

import (
	"bytes"
	"regexp"
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
{"Action":"output","Package":"x/a","Test":"TestThree","Output":"    three_test.go:12: setting up\n"}
{"Action":"output","Package":"x/a","Test":"TestThree","Output":"    three_test.go:40: skipped: kernel lacks FOU: no such file or directory\n"}
{"Action":"output","Package":"x/a","Test":"TestThree","Output":"--- SKIP: TestThree (0.02s)\n"}
{"Action":"skip","Package":"x/a","Test":"TestThree"}
{"Action":"output","Package":"x/a","Output":"FAIL\n"}
{"Action":"fail","Package":"x/a"}
{"Action":"output","Package":"x/b","Output":"?   \tx/b\t[no test files]\n"}
{"Action":"skip","Package":"x/b"}
{"Action":"pass","Package":"x/c","Test":"TestA"}
{"Action":"skip","Package":"x/c","Test":"TestB"}
{"Action":"output","Package":"x/c","Test":"TestA/one","Output":"    a_test.go:7: no tunnel here\n"}
{"Action":"skip","Package":"x/c","Test":"TestA/one"}
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
	if got, want := strings.Join(res["x/a"].Skips(), "|"), "TestThree: kernel lacks FOU: no such file or directory"; got != want {
		t.Errorf("skips of x/a: %q, want %q", got, want)
	}
	if got, want := strings.Join(res["x/c"].Skips(), "|"), "TestA/one: no tunnel here|TestB: no reason given"; got != want {
		t.Errorf("skips of x/c: %q, want %q", got, want)
	}
	for name, want := range map[string]string{"TestOne": "pass", "TestOne/sub": "pass", "TestTwo": "FAIL", "TestThree": "skip (kernel lacks FOU: no such file or directory)"} {
		if r := res["x/a"].Tests[name]; r == nil || r.Cell() != want {
			t.Errorf("x/a %s: %+v, want %q", name, r, want)
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

func TestSkipPattern(t *testing.T) {
	const scen = "x/scenario"
	skips := []GuestSkip{
		{Package: scen, Test: "TestScenarios/ratelimit", Reason: "r"},
		{Package: scen, Test: "TestScenarios/rate.limit", Reason: "r"},
		{Package: "x/other", Test: "TestOther", Reason: "r"},
	}
	got, err := skipPattern(skips, []string{scen, "x/lb"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `^TestScenarios$/^ratelimit$|^rate\.limit$`; got != want {
		t.Errorf("pattern %q, want %q", got, want)
	}
	// go test matches each slash-separated part against one level of the
	// test's name.
	levels := strings.Split(got, "/")
	for name, skip := range map[string]bool{
		"TestScenarios/ratelimit": true, "TestScenarios/rate.limit": true,
		"TestScenarios/ratelimit2": false, "TestScenarios/rateXlimit": false, "TestScenariosX/ratelimit": false,
	} {
		parts := strings.Split(name, "/")
		m := true
		for i, re := range levels {
			m = m && regexp.MustCompile(re).MatchString(parts[i])
		}
		if m != skip {
			t.Errorf("%s skipped: %v, want %v", name, m, skip)
		}
	}
	if got, err := skipPattern(skips, []string{"x/lb"}); err != nil || got != "" {
		t.Errorf("no skipped package: %q, %v; want no pattern", got, err)
	}
	if got, err := skipPattern(skips, []string{"x/other"}); err != nil || got != "^TestOther$" {
		t.Errorf("whole test: %q, %v", got, err)
	}
	if _, err := skipPattern(skips, []string{scen, "x/other"}); err == nil {
		t.Errorf("two top-level tests in one pattern were accepted")
	}
}
