package scenario

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

// connOutcome is one connect: load or hold: of a step and what its
// attempts got.
type connOutcome struct {
	from string
	// load is the connect: load; nil for a hold.
	load *ConnectLoad
	res  traffic.ConnectResult
}

// connectStart is how long after the step's connect loads are set up
// their common first attempt is at least.
const connectStart = 50 * time.Millisecond

// connects runs the step's connect: loads all at once. They share one
// start, so that their per-second counts add up second by second, and it
// is a whole second of the monotonic clock: the seconds admitted_rate
// measures are then the one-second windows of the rate limiter, whose
// rules the runner set on a whole second too (startChain), not parts of
// two.
func (r *runner) connects(ctx context.Context, loads []ConnectLoad) ([]connOutcome, error) {
	out := make([]connOutcome, len(loads))
	errs := make([]error, len(loads))
	start, err := traffic.NextWholeSecond(connectStart)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for i, c := range loads {
		wg.Go(func() {
			res, err := traffic.ConnectLoad(ctx, r.w.nodes[c.From], traffic.ConnectSpec{
				Dst: c.Dst, Rate: c.Rate, Duration: c.Duration, Timeout: c.Timeout, Start: start,
			})
			out[i] = connOutcome{from: c.From, load: &loads[i], res: res}
			if err != nil {
				errs[i] = fmt.Errorf("connect from %s to %v: %w", c.From, c.Dst, err)
			}
		})
	}
	wg.Wait()
	for _, o := range out {
		res := o.res
		r.say("  connect %v from %s at %d/s: %d attempts, %d ok, %d refused, %d timed out, %d failed", o.load.Dst, o.from,
			o.load.Rate, res.Attempts, res.OK, res.Refused, res.Timeout, res.Failed)
	}
	return out, errors.Join(errs...)
}

// hold opens a hold: and keeps its connections, by name, for close
// events; the run closes what is left at its end.
func (r *runner) hold(ctx context.Context, h HoldSpec) (connOutcome, error) {
	held, res, err := traffic.Hold(ctx, r.w.nodes[h.From], h.Dst, h.Count, h.Timeout)
	r.w.closers = append(r.w.closers, held.CloseAll)
	r.holds[h.Name] = held
	if err != nil {
		return connOutcome{}, fmt.Errorf("hold %s from %s to %v: %w", h.Name, h.From, h.Dst, err)
	}
	r.say("  hold %s: %d connections from %s to %v: %d ok, %d refused, %d timed out, %d failed", h.Name, h.Count, h.From, h.Dst,
		res.OK, res.Refused, res.Timeout, res.Failed)
	return connOutcome{from: h.From, res: res}, nil
}
