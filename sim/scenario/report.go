package scenario

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what one run of a scenario in one mode saw.
type Result struct {
	Scenario string `json:"scenario"`
	File     string `json:"file"`
	Mode     string `json:"mode"`
	// Prefix is the run prefix of the topology's namespaces.
	Prefix   string        `json:"prefix"`
	Duration time.Duration `json:"duration_ns"`
	Steps    []StepResult  `json:"steps"`
	// Error is why the run stopped early, if it did.
	Error string `json:"error,omitempty"`
}

// StepResult is one step's outcome.
type StepResult struct {
	Name   string   `json:"name"`
	Events []string `json:"events,omitempty"`
	// Sent counts crafted packets and real requests; Received counts
	// captured frames and answered requests.
	Sent       int               `json:"sent"`
	Received   int               `json:"received"`
	Duration   time.Duration     `json:"duration_ns"`
	Assertions []AssertionResult `json:"assertions"`
	Pcaps      []string          `json:"pcaps,omitempty"`
	// Placement is a digest of where every flow of the step landed
	// (flow and backend, sorted), empty when no flow reached a backend.
	// Two runs of a scenario that placed every flow alike, in any mode
	// or on any machine, have the same digest.
	Placement string `json:"placement,omitempty"`
}

// AssertionResult is one assertion's verdict with what was observed.
type AssertionResult struct {
	Kind     string `json:"kind"`
	Line     int    `json:"line"`
	Name     string `json:"name"`
	Passed   bool   `json:"passed"`
	Observed string `json:"observed"`
}

// Passed reports whether the run completed and every assertion passed.
func (r *Result) Passed() bool {
	if r.Error != "" {
		return false
	}
	p, f := r.Counts()
	return f == 0 && p > 0
}

// Counts returns the numbers of passed and failed assertions.
func (r *Result) Counts() (passed, failed int) {
	for _, s := range r.Steps {
		for _, a := range s.Assertions {
			if a.Passed {
				passed++
			} else {
				failed++
			}
		}
	}
	return passed, failed
}

// Traffic returns the packets and requests sent and received, over all
// steps.
func (r *Result) Traffic() (sent, received int) {
	for _, s := range r.Steps {
		sent += s.Sent
		received += s.Received
	}
	return sent, received
}

// WriteReport prints one run for a reader: every step with its events,
// traffic and assertions, each assertion with its verdict and what was
// observed.
func (r *Result) WriteReport(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s (%s), %s mode, topology %s, %v\n", r.Scenario, r.File, r.Mode, r.Prefix, r.Duration.Round(time.Millisecond))
	for i, s := range r.Steps {
		fmt.Fprintf(&b, "  step %d %q: sent %d, received %d, %v\n", i+1, s.Name, s.Sent, s.Received, s.Duration.Round(time.Millisecond))
		for _, e := range s.Events {
			fmt.Fprintf(&b, "    event  %s\n", e)
		}
		for _, a := range s.Assertions {
			mark := "pass"
			if !a.Passed {
				mark = "FAIL"
			}
			fmt.Fprintf(&b, "    %s   %s (line %d)\n           observed: %s\n", mark, a.Name, a.Line, a.Observed)
		}
		for _, p := range s.Pcaps {
			fmt.Fprintf(&b, "    pcap   %s\n", p)
		}
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "  ERROR  %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSummary prints the table that ends a run of several scenarios and
// modes: one line per run.
func WriteSummary(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nscenario\tmode\tpassed\tfailed\tsent\treceived\tduration\tresult")
	for _, r := range results {
		p, f := r.Counts()
		s, rc := r.Traffic()
		verdict := "PASS"
		if !r.Passed() {
			verdict = "FAIL"
		}
		if r.Error != "" {
			verdict = "ERROR"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%v\t%s\n", r.Scenario, r.Mode, p, f, s, rc, r.Duration.Round(time.Millisecond), verdict)
	}
	return tw.Flush()
}

// WriteJSON writes the results as one JSON document.
func WriteJSON(path string, results []*Result) error {
	data, err := json.MarshalIndent(struct {
		Results []*Result `json:"results"`
	}{results}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
