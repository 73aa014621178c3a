package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestTeardownReleasesEverything runs a scenario to success, to a failed
// assertion, into a build failure after the LB programs were attached, and
// into a panic in the middle of a step, in both XDP modes, and checks each
// time that no namespace of the run is left and that every BPF program and
// map the run held just before teardown (by ID, so that other tests loading
// programs meanwhile do not matter) is gone.
func TestTeardownReleasesEverything(t *testing.T) {
	testenv.RequirePriv(t)
	errBuild := errors.New("injected build failure")
	wrong := strings.Replace(base, "counters: {values: {tx: 1}}", "counters: {values: {tx: 2}}", 1)
	cases := []struct {
		name  string
		yaml  string
		setup func()
		// check judges the run's outcome.
		check func(res *Result, err error) string
	}{
		{"success", base, nil, func(res *Result, err error) string {
			if err != nil || !res.Passed() {
				return "want a passing run"
			}
			return ""
		}},
		{"assertion fails", wrong, nil, func(res *Result, err error) string {
			if err != nil || res.Passed() {
				return "want a completed run with a failed assertion"
			}
			for _, s := range res.Steps {
				for _, p := range s.Pcaps {
					os.Remove(p)
					// The run's directory holds nothing else.
					os.Remove(filepath.Dir(p))
				}
			}
			return ""
		}},
		{"build fails", base, func() { testHooks.built = func() error { return errBuild } }, func(res *Result, err error) string {
			if !errors.Is(err, errBuild) || len(res.Steps) != 0 {
				return "want the injected build error and no step run"
			}
			return ""
		}},
		{"panic in step", base, func() { testHooks.step = func(string) { panic("injected panic") } }, func(res *Result, err error) string {
			if !errors.Is(err, ErrPanic) || !strings.Contains(err.Error(), "injected panic") || !strings.Contains(res.Error, "injected panic") || res.Passed() {
				return "want ErrPanic naming the panic, also in the result"
			}
			return ""
		}},
	}
	for _, mode := range []attach.Mode{attach.Native, attach.Generic} {
		for _, tc := range cases {
			t.Run(mode.String()+"/"+tc.name, func(t *testing.T) {
				sc, err := Parse(tc.name+".yaml", []byte(tc.yaml))
				if err != nil {
					t.Fatal(err)
				}
				var held *bpfObjects
				testHooks.loaded = func(o bpfObjects) { held = &o }
				if tc.setup != nil {
					tc.setup()
				}
				defer func() { testHooks.loaded, testHooks.built, testHooks.step = nil, nil, nil }()
				res, err := Run(context.Background(), sc, Options{Mode: mode})
				if res == nil {
					t.Fatalf("no result; err %v", err)
				}
				if msg := tc.check(res, err); msg != "" {
					t.Errorf("err %v, passed %v: %s", err, res.Passed(), msg)
				}
				assertNoNamespaces(t, res.Prefix)
				if held == nil {
					t.Fatal("the run reported no BPF objects before teardown")
				}
				// One LB program, and in native mode the XDP_PASS
				// program on the router's end of the LB link; the LB's
				// maps, connection tables of every CPU among them.
				wantProgs := map[attach.Mode]int{attach.Native: 2, attach.Generic: 1}[mode]
				if len(held.Progs) != wantProgs || len(held.Maps) < 5 {
					t.Errorf("held %d programs and %d maps before teardown, want %d programs and at least 5 maps", len(held.Progs), len(held.Maps), wantProgs)
				}
				assertBPFGone(t, *held)
			})
		}
	}
}

// assertBPFGone checks that no program or map of objs can be opened by ID
// any more, allowing the kernel a moment: it frees them after an RCU grace
// period.
func assertBPFGone(t *testing.T, objs bpfObjects) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for _, id := range objs.Progs {
			p, err := ebpf.NewProgramFromID(id)
			if err == nil {
				p.Close()
				left = append(left, fmt.Sprintf("program %d", id))
			} else if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("open program %d: %v, want ErrNotExist", id, err)
			}
		}
		for _, id := range objs.Maps {
			m, err := ebpf.NewMapFromID(id)
			if err == nil {
				m.Close()
				left = append(left, fmt.Sprintf("map %d", id))
			} else if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("open map %d: %v, want ErrNotExist", id, err)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("BPF objects still loaded after the run: %v", left)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
