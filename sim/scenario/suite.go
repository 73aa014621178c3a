package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sluice-dp/sluice/dataplane/attach"
)

// LoadAll loads every file and reports all their problems together, so
// that nothing runs unless every scenario is valid.
func LoadAll(paths []string) ([]*Scenario, error) {
	var scs []*Scenario
	var errs []error
	for _, p := range paths {
		sc, err := Load(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		scs = append(scs, sc)
	}
	return scs, errors.Join(errs...)
}

// RunAll runs every scenario in every mode, one after the other, writing
// progress and each run's report to out, and returns the results in run
// order. It stops early only when ctx is cancelled; a run that fails to
// set up is reported and the next one starts.
func RunAll(ctx context.Context, scs []*Scenario, modes []attach.Mode, opts Options, out io.Writer) ([]*Result, error) {
	var results []*Result
	total := len(scs) * len(modes)
	for i, sc := range scs {
		for j, m := range modes {
			fmt.Fprintf(out, "\n=== run %d/%d: %s (%s), %s mode\n", i*len(modes)+j+1, total, sc.Name, sc.File, m)
			o := opts
			o.Mode, o.Progress = m, out
			res, err := Run(ctx, sc, o)
			if res != nil {
				results = append(results, res)
				if werr := res.WriteReport(out); werr != nil {
					return results, werr
				}
			}
			if ctx.Err() != nil {
				return results, errors.Join(ctx.Err(), err)
			}
		}
	}
	return results, nil
}
