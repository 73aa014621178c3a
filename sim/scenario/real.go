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
	// started names the step a background load started in.
	started string
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

// udpOutcome is one udp: load of a step and what it got.
type udpOutcome struct {
	spec UDPLoad
	res  traffic.UDPResult
}

// udp runs one UDP request/response load from a node's own sockets.
func (r *runner) udp(ctx context.Context, u UDPLoad) (udpOutcome, error) {
	res, err := traffic.UDPRequests(ctx, r.w.nodes[u.From], u.Dst, u.Requests, u.Timeout)
	if err != nil {
		return udpOutcome{}, fmt.Errorf("udp from %s to %v: %w", u.From, u.Dst, err)
	}
	r.say("  udp %v from %s: %d sent, %d answered, p50 %v, p99 %v", u.Dst, u.From, res.Sent, res.Answered,
		res.Percentile(50), res.Percentile(99))
	return udpOutcome{spec: u, res: res}, nil
}
