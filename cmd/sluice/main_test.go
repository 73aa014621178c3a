package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/internal/testenv"
)

func TestCommandLine(t *testing.T) {
	for _, c := range []struct {
		name   string
		args   []string
		status int
		// stderr and stdout must contain these.
		stderr, stdout string
	}{
		{name: "no command", args: nil, status: exitUsage, stderr: "Usage: sluice <command>"},
		{name: "unknown command", args: []string{"frobnicate"}, status: exitUsage, stderr: `unknown command "frobnicate"`},
		{name: "help", args: []string{"help"}, status: exitOK, stdout: "sim clean"},
		{name: "sim without command", args: []string{"sim"}, status: exitUsage, stderr: "Usage: sluice sim <command>"},
		{name: "sim unknown command", args: []string{"sim", "walk"}, status: exitUsage, stderr: `unknown command "walk"`},
		{name: "sim run without file", args: []string{"sim", "run"}, status: exitUsage, stderr: "no scenario file given"},
		{name: "sim run bad mode", args: []string{"sim", "run", "-mode", "turbo", "x.yaml"}, status: exitUsage, stderr: "want native, generic or both"},
		{name: "sim run missing file", args: []string{"sim", "run", "does-not-exist.yaml"}, status: exitUsage, stderr: "does-not-exist.yaml"},
		{name: "sim clean stray argument", args: []string{"sim", "clean", "all"}, status: exitUsage, stderr: `unexpected argument "all"`},
		{name: "bench bad mode", args: []string{"bench", "-mode", "fast"}, status: exitUsage, stderr: "want native or generic"},
		{name: "bench negative samples", args: []string{"bench", "-samples", "-1"}, status: exitUsage, stderr: "out of range"},
		{name: "bench negative tc calls", args: []string{"bench", "-tc-calls", "-5"}, status: exitUsage, stderr: "-tc-calls -5 out of range"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(context.Background(), c.args, &stdout, &stderr)
			if got != c.status {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", got, c.status, &stdout, &stderr)
			}
			if !strings.Contains(stderr.String(), c.stderr) {
				t.Errorf("stderr does not contain %q:\n%s", c.stderr, &stderr)
			}
			if !strings.Contains(stdout.String(), c.stdout) {
				t.Errorf("stdout does not contain %q:\n%s", c.stdout, &stdout)
			}
		})
	}
}

// TestSimRunQuickstart runs the README's first command the way the CLI does.
func TestSimRunQuickstart(t *testing.T) {
	testenv.RequirePriv(t)
	var stdout, stderr bytes.Buffer
	if got := run(context.Background(), []string{"sim", "run", "-mode", "generic", "../../scenarios/quickstart.yaml"}, &stdout, &stderr); got != exitOK {
		t.Fatalf("exit status %d, want 0\nstdout:\n%s\nstderr:\n%s", got, &stdout, &stderr)
	}
	if !strings.Contains(stdout.String(), "quickstart") || !strings.Contains(stdout.String(), "generic") {
		t.Errorf("summary does not name the scenario and mode:\n%s", &stdout)
	}
}

// TestSimRunInterrupted checks that a cancelled run fails rather than
// reporting success.
func TestSimRunInterrupted(t *testing.T) {
	testenv.RequirePriv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	if got := run(ctx, []string{"sim", "run", "../../scenarios/quickstart.yaml"}, &stdout, &stderr); got != exitFail {
		t.Errorf("exit status %d, want 1\nstdout:\n%s\nstderr:\n%s", got, &stdout, &stderr)
	}
}
