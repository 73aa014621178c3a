package scenario

import (
	"context"
	"fmt"

	"github.com/sluice-dp/sluice/sim/traffic"
)

// httpOutcome is one http: load of a step and what it got.
type httpOutcome struct {
	spec HTTPLoad
	res  traffic.HTTPResult
}

// http runs one HTTP load from a node's own sockets.
func (r *runner) http(ctx context.Context, h HTTPLoad) (httpOutcome, error) {
	res, err := traffic.HTTPLoad(ctx, r.w.nodes[h.From], traffic.HTTPSpec{
		URL: h.URL, Requests: h.Requests, Connections: h.Connections, Timeout: h.Timeout,
	})
	if err != nil {
		return httpOutcome{}, fmt.Errorf("http from %s to %s: %w", h.From, h.URL, err)
	}
	r.say("  http %s from %s: %d ok, %d failed, p50 %v, p99 %v", h.URL, h.From, res.OK, res.Failed,
		res.Percentile(50), res.Percentile(99))
	return httpOutcome{spec: h, res: res}, nil
}
