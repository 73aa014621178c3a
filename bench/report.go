package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// DefaultDir is where [Run] writes when given no directory: DESIGN §7's
// place for results, relative to the repository root the CLI runs from.
const DefaultDir = "bench/results"

// Names of the files [Report.WriteDir] writes.
const (
	JSONFile       = "results.json"
	MDFile         = "results.md"
	NetChartFile   = "net_ns.png"
	RatioChartFile = "ratio.png"
)

// WriteDir writes the report to dir, creating it if needed: JSONFile for
// programs, MDFile for people, and the two charts the Markdown shows.
func (r Report) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create results dir %s: %w", dir, err)
	}
	files := []struct {
		name  string
		write func(io.Writer) error
	}{
		{JSONFile, r.WriteJSON},
		{MDFile, r.WriteMarkdown},
		{NetChartFile, r.WriteNetChart},
		{RatioChartFile, r.WriteRatioChart},
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.write); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes through a temporary file and renames it, so an
// interrupted run never leaves a truncated result next to good ones.
func writeFile(path string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteJSON writes the report as indented JSON, every sample included, so a
// later tool can redo the statistics.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes the report as a page a person reads: what was run on
// what, the table, the charts, and the command to run it again.
func (r Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# XDP and TC per-packet cost\n\n")
	fmt.Fprintf(&b, "Measured %s on Linux %s, %s (%d CPUs), %s.\n\n",
		r.Date.Format("2006-01-02 15:04 MST"), r.Kernel, r.CPU, r.CPUs, r.GoVersion)
	fmt.Fprintf(&b, "Each program ran with BPF_PROG_RUN in live-frames mode on a veth, in %d rounds of %d frames, "+
		"each round also running the empty program that returns the same verdict. "+
		"Figures are the kernel's ns per packet, median over the rounds (min–max in brackets); "+
		"net and ratio are taken within each round, so they are the numbers to compare across machines and runs.\n\n",
		r.Options.Samples, r.Options.Repeat)
	if o := r.TCOptions; o != nil {
		fmt.Fprintf(&b, "Cases of kind tc are TC (sched_cls) programs: BPF_PROG_RUN has no live-frames mode for them "+
			"and repeat > 1 would re-run a program on its own output, so each syscall runs the program once (repeat 1) "+
			"on a fresh socket buffer, and the figure is the kernel's duration of that run averaged over %d calls per round, "+
			"%d rounds, program and empty TC program alternating call by call on one pinned CPU.\n\n",
			o.Calls, o.Rounds)
	}
	b.WriteString("| case | verdict | receiver | frame | program ns/pkt | baseline ns/pkt | net ns/pkt | ratio |\n")
	b.WriteString("|---|---|---|--:|--:|--:|--:|--:|\n")
	for _, c := range r.Cases {
		fmt.Fprintf(&b, "| %s | %s | %s | %d B | %s | %s | %s (%s…%s) | %.3f |\n",
			mdEscape(c.Name), c.verdictName(), c.receiver(), c.FrameLen,
			fmtNs(c.Program.NsPerPacket.Median), fmtNs(c.Baseline.NsPerPacket.Median),
			fmtSigned(c.NetNs.Median), fmtSigned(c.NetNs.Min), fmtSigned(c.NetNs.Max), c.Ratio.Median)
	}
	fmt.Fprintf(&b, "\n![net ns per packet](%s)\n\n![ratio to the empty program](%s)\n\n", NetChartFile, RatioChartFile)
	if d := r.DSR; d != nil {
		b.WriteString("## HTTP through the DSR path vs direct\n\n")
		fmt.Fprintf(&b, "Requests per second from one client, %d keep-alive connections, %d requests a load, %d rounds "+
			"alternating the order: through router → LB node (XDP, %s) → backend host (agent, transparent mode) → VM, "+
			"replies straight back; and from the same client to the same server socket directly (router → host → VM). "+
			"Ratio is through-LB over direct within each round.\n\n",
			d.Options.Connections, d.Options.Requests, d.Options.Rounds, d.Options.Mode)
		b.WriteString("| through LB req/s | direct req/s | ratio |\n|--:|--:|--:|\n")
		fmt.Fprintf(&b, "| %.0f | %.0f | %.3f (%.3f…%.3f) |\n\n", d.LBRPS.Median, d.DirectRPS.Median, d.Ratio.Median, d.Ratio.Min, d.Ratio.Max)
	}
	b.WriteString("Produced by:\n\n")
	cmd := r.Command
	if cmd == "" {
		cmd = "(not recorded)"
	}
	fmt.Fprintf(&b, "```sh\n%s\n```\n", cmd)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTable writes the summary table for a terminal.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tverdict\treceiver\tframe\tprogram ns/pkt\tbaseline ns/pkt\tnet ns/pkt\tratio\t")
	for _, c := range r.Cases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%.3f\t\n",
			c.Name, c.verdictName(), c.receiver(), c.FrameLen,
			fmtNs(c.Program.NsPerPacket.Median), fmtNs(c.Baseline.NsPerPacket.Median),
			fmtSigned(c.NetNs.Median), c.Ratio.Median)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if d := r.DSR; d != nil {
		_, err := fmt.Fprintf(w, "\nhttp through lb %.0f req/s, direct %.0f req/s, ratio %.3f (%.3f-%.3f)\n",
			d.LBRPS.Median, d.DirectRPS.Median, d.Ratio.Median, d.Ratio.Min, d.Ratio.Max)
		return err
	}
	return nil
}

// WriteNetChart draws each case's net ns per packet as a bar, with the
// spread over rounds as a whisker.
func (r Report) WriteNetChart(w io.Writer) error {
	bars := make([]bar, len(r.Cases))
	for i, c := range r.Cases {
		bars[i] = bar{label: c.Name, value: c.NetNs.Median, lo: c.NetNs.Min, hi: c.NetNs.Max, text: fmtSigned(c.NetNs.Median) + " ns"}
	}
	return drawBars(w, "net ns/packet over the empty program (median, min-max)", bars, 0)
}

// WriteRatioChart draws each case's cost as a multiple of its empty
// program's, with 1 as the reference line.
func (r Report) WriteRatioChart(w io.Writer) error {
	bars := make([]bar, len(r.Cases))
	for i, c := range r.Cases {
		bars[i] = bar{label: c.Name, value: c.Ratio.Median, lo: c.Ratio.Min, hi: c.Ratio.Max, text: fmt.Sprintf("x%.3f", c.Ratio.Median)}
	}
	return drawBars(w, "cost / empty program's cost (median, min-max)", bars, 1)
}

func fmtNs(v float64) string {
	if math.Abs(v-math.Round(v)) < 1e-9 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func fmtSigned(v float64) string {
	s := fmtNs(v)
	if v > 0 {
		return "+" + s
	}
	return s
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// verdictName is the case's XDP verdict or TC action.
func (c CaseResult) verdictName() string {
	if c.Kind == KindTC {
		return c.TCAction
	}
	return c.Verdict.String()
}

// receiver is the XDP mode of the lab's receiving end; TC cases have none.
func (c CaseResult) receiver() string {
	if c.Kind == KindTC {
		return "-"
	}
	return c.Mode.String()
}
