package dataplane_test

import (
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestGeneratedFresh re-runs every bpf2go //go:generate line of
// dataplane/*/gen.go into a temporary directory and compares the result byte
// for byte with the committed files, so that a change to a BPF source or
// header cannot land without `make generate`. It needs clang and llvm-strip;
// without them it skips, since building the BPF objects is optional.
func TestGeneratedFresh(t *testing.T) {
	// A build check: inside a kernel-matrix guest (vm.GuestEnvVar) clang
	// would run under emulation for minutes and prove nothing about the
	// guest's kernel.
	testenv.SkipUnless(t, os.Getenv("SLUICE_GUEST") != "1", "generated code is checked on the host, not in a kernel-matrix guest")
	gens, err := filepath.Glob(filepath.Join("*", "gen.go"))
	if err != nil {
		t.Fatal(err)
	}
	var jobs []bpf2goJob
	for _, gen := range gens {
		js, err := bpf2goJobs(gen)
		if err != nil {
			t.Fatalf("dataplane/%s: %v", filepath.ToSlash(gen), err)
		}
		jobs = append(jobs, js...)
	}
	if len(jobs) == 0 {
		t.Skip("no bpf2go packages yet")
	}
	for _, tool := range toolchain(jobs) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not in PATH: cannot check that the committed bpf2go output is fresh", tool)
		}
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}

	for _, job := range jobs {
		name := fmt.Sprintf("%s:%d", filepath.ToSlash(job.dir), job.line)
		t.Run(name, func(t *testing.T) {
			label := "dataplane/" + filepath.ToSlash(job.dir)
			tmp := t.TempDir()
			args, committedDir := job.withOutputDir(tmp)

			// The same environment go generate gives a generator, and the
			// same working directory, so that the paths clang records in
			// the object are the committed ones.
			env := append(os.Environ(),
				"GOROOT="+strings.TrimSpace(string(goroot)),
				"GOARCH="+runtime.GOARCH,
				"GOOS="+runtime.GOOS,
				"GOFILE=gen.go",
				"GOLINE="+strconv.Itoa(job.line),
				"GOPACKAGE="+job.pkg,
				"DOLLAR=$",
			)
			absDir, err := filepath.Abs(job.dir)
			if err != nil {
				t.Fatal(err)
			}
			env = append(env, "PWD="+absDir)
			for i, a := range args {
				args[i] = os.Expand(a, func(v string) string { return lookupEnv(env, v) })
			}
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Dir = job.dir
			cmd.Env = env
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				hint := ""
				if strings.Contains(out.String(), "'asm/types.h' file not found") {
					// Debian keeps asm/ in the multiarch include directory,
					// which clang -target bpf does not search by itself.
					hint = "\nhint: add -I/usr/include/$(uname -m)-linux-gnu to -cflags in gen.go"
				}
				t.Fatalf("%s: %s: %v\n%s%s", label, strings.Join(args, " "), err, out.String(), hint)
			}

			generated, err := os.ReadDir(tmp)
			if err != nil {
				t.Fatal(err)
			}
			if len(generated) == 0 {
				t.Fatalf("%s: bpf2go wrote no files", label)
			}
			for _, f := range generated {
				if !f.Type().IsRegular() {
					continue
				}
				fresh, err := os.ReadFile(filepath.Join(tmp, f.Name()))
				if err != nil {
					t.Fatal(err)
				}
				committed, err := os.ReadFile(filepath.Join(committedDir, f.Name()))
				switch {
				case errors.Is(err, os.ErrNotExist):
					t.Errorf("%s: %s is missing: run `make generate`", label, f.Name())
				case err != nil:
					t.Fatal(err)
				case !bytes.Equal(fresh, committed):
					t.Errorf("%s: %s is stale: run `make generate`", label, f.Name())
				}
			}
		})
	}
}

// bpf2goJob is one bpf2go invocation found in a gen.go file.
type bpf2goJob struct {
	dir   string   // package directory, relative to dataplane/
	line  int      // line of the //go:generate directive
	pkg   string   // package name, as go generate passes it in GOPACKAGE
	words []string // the command, split and with -command shorthands applied
	tool  int      // index in words of the bpf2go program itself
}

// bpf2goJobs returns the bpf2go invocations among the //go:generate
// directives of one file. Other generators are ignored.
func bpf2goJobs(path string) ([]bpf2goJob, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.PackageClauseOnly)
	if err != nil {
		return nil, err
	}
	shorthands := map[string][]string{}
	var jobs []bpf2goJob
	for i, line := range strings.Split(string(src), "\n") {
		rest, ok := strings.CutPrefix(line, "//go:generate")
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			continue
		}
		words, err := splitGenerate(rest)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		if len(words) == 0 {
			continue
		}
		if words[0] == "-command" {
			if len(words) < 3 {
				return nil, fmt.Errorf("line %d: -command needs a name and a command", i+1)
			}
			shorthands[words[1]] = slices.Clone(words[2:])
			continue
		}
		if sh, ok := shorthands[words[0]]; ok {
			words = append(slices.Clone(sh), words[1:]...)
		}
		tool := slices.IndexFunc(words, isBpf2go)
		if tool < 0 {
			continue
		}
		jobs = append(jobs, bpf2goJob{
			dir:   filepath.Dir(path),
			line:  i + 1,
			pkg:   f.Name.Name,
			words: words,
			tool:  tool,
		})
	}
	return jobs, nil
}

// isBpf2go reports whether a command word names bpf2go: the tool name of
// `go tool bpf2go`, a binary, or the package path given to `go run`.
func isBpf2go(word string) bool {
	word, _, _ = strings.Cut(word, "@")
	return filepath.Base(word) == "bpf2go" || strings.HasSuffix(word, "/cmd/bpf2go")
}

// withOutputDir returns the command with its output sent to dir, and the
// directory where the committed output lives (the package directory, unless
// the directive names its own -output-dir, relative to it).
func (j bpf2goJob) withOutputDir(dir string) (args []string, committed string) {
	committed = j.dir
	flags := j.words[j.tool+1:]
	var kept []string
	for i := 0; i < len(flags); i++ {
		a := flags[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			kept = append(kept, flags[i:]...) // positional arguments and C flags
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "output-dir" {
			if !hasValue && i+1 < len(flags) {
				i++
				value = flags[i]
			}
			committed = filepath.Join(j.dir, value)
			continue
		}
		kept = append(kept, a)
	}
	args = slices.Clone(j.words[:j.tool+1])
	args = append(args, "-output-dir", dir)
	return append(args, kept...), committed
}

// toolchain returns the programs bpf2go needs for these jobs: the C compiler
// and, unless stripping is disabled, the matching llvm-strip.
func toolchain(jobs []bpf2goJob) []string {
	var tools []string
	for _, j := range jobs {
		cc, strip, noStrip := "clang", "", false
		if v := os.Getenv("BPF2GO_CC"); v != "" {
			cc = v
		}
		strip = os.Getenv("BPF2GO_STRIP")
		flags := j.words[j.tool+1:]
		for i := 0; i < len(flags) && strings.HasPrefix(flags[i], "-") && flags[i] != "--"; i++ {
			name, value, hasValue := strings.Cut(strings.TrimLeft(flags[i], "-"), "=")
			if !hasValue && (name == "cc" || name == "strip") && i+1 < len(flags) {
				i++
				value = flags[i]
			}
			switch name {
			case "cc":
				cc = value
			case "strip":
				strip = value
			case "no-strip":
				noStrip = true
			}
		}
		if fields := strings.Fields(cc); len(fields) > 0 {
			cc = fields[0] // BPF2GO_CC may be "ccache clang"
		}
		if strip == "" {
			strip = "llvm-strip" + strings.TrimPrefix(cc, "clang")
			if !strings.HasPrefix(cc, "clang") {
				strip = "llvm-strip"
			}
		}
		tools = append(tools, cc)
		if !noStrip {
			tools = append(tools, strip)
		}
	}
	slices.Sort(tools)
	return slices.Compact(tools)
}

// splitGenerate splits the arguments of a //go:generate directive the way
// go generate does: words are separated by spaces and tabs, and a word that
// starts with a double quote is a Go string literal standing for one
// argument (single quotes are not special). Environment variables are
// expanded later, by the caller, as go generate does after splitting.
func splitGenerate(s string) ([]string, error) {
	s = strings.TrimSuffix(s, "\r")
	var words []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return words, nil
		}
		if s[0] == '"' {
			lit, err := strconv.QuotedPrefix(s)
			if err != nil || lit[0] != '"' {
				return nil, fmt.Errorf("bad quoted string in %q", s)
			}
			word, err := strconv.Unquote(lit)
			if err != nil {
				return nil, fmt.Errorf("bad quoted string %s", lit)
			}
			words = append(words, word)
			s = s[len(lit):]
			if s != "" && s[0] != ' ' && s[0] != '\t' {
				return nil, fmt.Errorf("expected a space after quoted argument %s", lit)
			}
			continue
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			end = len(s)
		}
		words = append(words, s[:end])
		s = s[end:]
	}
}

// lookupEnv returns the last value of name in env, like the process
// environment does for duplicated entries.
func lookupEnv(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

func TestSplitGenerate(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{` go tool bpf2go lb ../../bpf/lb.bpf.c`, []string{"go", "tool", "bpf2go", "lb", "../../bpf/lb.bpf.c"}},
		{"\tgo  tool\tbpf2go\r", []string{"go", "tool", "bpf2go"}},
		{` bpf2go -cflags "-O2 -g -I../../bpf/include" lb x.c`, []string{"bpf2go", "-cflags", "-O2 -g -I../../bpf/include", "lb", "x.c"}},
		{` a "with \"escaped\" quotes" "tab\there"`, []string{"a", `with "escaped" quotes`, "tab\there"}},
		{` a 'single quotes' split`, []string{"a", "'single", "quotes'", "split"}},
		{` a $GOPACKAGE "$DOLLAR"`, []string{"a", "$GOPACKAGE", "$DOLLAR"}},
		{` a ""`, []string{"a", ""}},
		{`   `, nil},
	}
	for _, tt := range tests {
		got, err := splitGenerate(tt.in)
		if err != nil {
			t.Errorf("splitGenerate(%q): %v", tt.in, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("splitGenerate(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{` a "unterminated`, ` a "x"y`, ` a "bad \q escape"`} {
		if got, err := splitGenerate(bad); err == nil {
			t.Errorf("splitGenerate(%q) = %q, want an error", bad, got)
		}
	}
}

func TestWithOutputDir(t *testing.T) {
	job := func(words ...string) bpf2goJob {
		return bpf2goJob{dir: "lb", words: words, tool: slices.IndexFunc(words, isBpf2go)}
	}
	tests := []struct {
		job           bpf2goJob
		want          []string
		wantCommitted string
	}{
		{
			job("go", "tool", "bpf2go", "-type", "vip_key", "lb", "../../bpf/lb.bpf.c", "--", "-I../../bpf/include"),
			[]string{"go", "tool", "bpf2go", "-output-dir", "/tmp/x", "-type", "vip_key", "lb", "../../bpf/lb.bpf.c", "--", "-I../../bpf/include"},
			"lb",
		},
		{
			job("go", "run", "github.com/cilium/ebpf/cmd/bpf2go@v0.22.0", "-output-dir", "gen", "lb", "x.c"),
			[]string{"go", "run", "github.com/cilium/ebpf/cmd/bpf2go@v0.22.0", "-output-dir", "/tmp/x", "lb", "x.c"},
			filepath.Join("lb", "gen"),
		},
		{
			job("bpf2go", "--output-dir=gen", "-no-strip", "lb", "x.c", "--", "-output-dir", "y"),
			[]string{"bpf2go", "-output-dir", "/tmp/x", "-no-strip", "lb", "x.c", "--", "-output-dir", "y"},
			filepath.Join("lb", "gen"),
		},
	}
	for _, tt := range tests {
		got, committed := tt.job.withOutputDir("/tmp/x")
		if !slices.Equal(got, tt.want) || committed != tt.wantCommitted {
			t.Errorf("withOutputDir(%q) = %q, %q; want %q, %q", tt.job.words, got, committed, tt.want, tt.wantCommitted)
		}
	}
}
