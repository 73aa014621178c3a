package traffic

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluice-dp/sluice/sim/topo"
)

// ServedByPrefix starts the first line of every response body of
// ServeHTTP, followed by the node's name; HTTPLoad counts responses by it.
// Reading it from the body rather than a header means it survives any
// proxy or rewrite a scenario may put between client and server.
const ServedByPrefix = "served-by: "

// StreamInterval is how often a /stream response sends a chunk.
const StreamInterval = 100 * time.Millisecond

// maxStreamSeconds bounds /stream?seconds=N, so that a typo cannot hold a
// scenario's server for hours.
const maxStreamSeconds = 3600

// DefaultHTTPTimeout is HTTPSpec.Timeout when it is zero.
const DefaultHTTPTimeout = 5 * time.Second

// ServeHTTP runs an HTTP server on addr inside node. Every response is 200
// with the body "served-by: <node>\n", so a client can tell which backend
// answered; GET /stream?seconds=N instead streams that line and then one
// chunk every StreamInterval for N seconds (fractions allowed), a
// long-lived connection for scenarios that change the topology under it.
// A missing or bad N gets 400, so that a scenario's typo shows up as
// failed requests rather than as a stream of some default length.
//
// The returned stop closes the listener and every connection, ends
// running streams, and waits until the serving goroutine and every
// handler have returned. It may be called more than once.
func ServeHTTP(node *topo.Node, addr netip.AddrPort) (stop func() error, err error) {
	var l net.Listener
	err = node.Do(func() error {
		l, err = net.Listen("tcp", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("serve http on %v in %s: %w", addr, node.Name(), err)
	}
	h := &httpHandler{node: node.Name(), quit: make(chan struct{})}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// A client timing out mid-request is part of some scenarios,
		// not a server problem worth a line on stderr.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	stop = sync.OnceValue(func() error {
		h.close()
		err := srv.Close()
		serveErr := <-served
		h.running.Wait()
		if err != nil {
			return fmt.Errorf("stop http server on %v in %s: %w", addr, node.Name(), err)
		}
		if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
			return fmt.Errorf("http server on %v in %s: %w", addr, node.Name(), serveErr)
		}
		return nil
	})
	return stop, nil
}

// httpHandler answers ServeHTTP's requests.
type httpHandler struct {
	node    string
	quit    chan struct{} // closed by stop: streams end
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

// enter registers a running handler, or reports false after close. The
// lock keeps every Add before close's Wait, as WaitGroup requires; a
// connection that read its request just before the server closed could
// otherwise start a handler while stop waits.
func (h *httpHandler) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.running.Add(1)
	return true
}

// close makes new requests fail and ends running streams.
func (h *httpHandler) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	close(h.quit)
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.enter() {
		http.Error(w, "server stopping", http.StatusServiceUnavailable)
		return
	}
	defer h.running.Done()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	line := ServedByPrefix + h.node + "\n"
	if r.URL.Path != "/stream" {
		io.WriteString(w, line)
		return
	}
	secs, err := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64)
	if err != nil || secs <= 0 || secs > maxStreamSeconds || math.IsNaN(secs) {
		http.Error(w, fmt.Sprintf("seconds=%q: want a number of seconds in (0, %d]", r.URL.Query().Get("seconds"), maxStreamSeconds), http.StatusBadRequest)
		return
	}
	flusher, _ := w.(http.Flusher)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	// No Content-Length and a flush after every write: net/http sends
	// the body chunked, as a real streaming endpoint would.
	io.WriteString(w, line)
	flush()
	start := time.Now()
	end := time.NewTimer(time.Duration(secs * float64(time.Second)))
	defer end.Stop()
	tick := time.NewTicker(StreamInterval)
	defer tick.Stop()
	for i := 1; ; i++ {
		select {
		case <-h.quit:
			return
		case <-r.Context().Done():
			return
		case <-end.C:
			return
		case now := <-tick.C:
			if _, err := fmt.Fprintf(w, "chunk %d at %v\n", i, now.Sub(start).Round(time.Millisecond)); err != nil {
				return
			}
			flush()
		}
	}
}

// HTTPSpec describes an HTTPLoad run.
type HTTPSpec struct {
	// URL is requested with GET; only http:// with an IP address, since
	// nodes have no resolver.
	URL string
	// Requests is the total number of requests, at least 1.
	Requests int
	// Connections is how many keep-alive connections run concurrently,
	// each making its share of the requests one after another; 0 means
	// 1, and more than Requests means Requests.
	Connections int
	// Timeout bounds each request, from sending it to the end of the
	// body; 0 means DefaultHTTPTimeout.
	Timeout time.Duration
}

// HTTPResult is what an HTTPLoad run saw.
type HTTPResult struct {
	// OK counts requests answered with a 2xx status and a complete body;
	// Failed counts all the others, so OK+Failed is the number of
	// requests made.
	OK, Failed int
	// Status counts responses by status code, failed ones included.
	Status map[int]int
	// Errors counts requests that got no complete response, by kind of
	// error ("timeout", "connection refused", "connection reset by
	// peer", "EOF", ...), short enough to compare across runs.
	Errors map[string]int
	// Latencies are the durations of the OK requests, from sending to
	// the end of the body, in the order they completed.
	Latencies []time.Duration
	// ServedBy counts OK responses by the node named in the body (see
	// ServedByPrefix); responses without the line are not counted.
	ServedBy map[string]int
	// Dials is the number of TCP connections opened. With keep-alive
	// working it equals the number of connections; more means the server
	// or the network closed some and they were opened again.
	Dials int
	// Elapsed is the run's wall-clock time.
	Elapsed time.Duration
}

// Percentile returns the p-th percentile (0-100) of Latencies by the
// nearest-rank method: the smallest latency at least p percent of the OK
// requests did not exceed. It returns 0 when there are none.
func (r HTTPResult) Percentile(p float64) time.Duration {
	return percentile(r.Latencies, p)
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// HTTPLoad makes spec.Requests GET requests from node to spec.URL over
// spec.Connections concurrent keep-alive connections, whose sockets are
// created inside node. Each connection is a client of its own, so one
// connection carries its share of the requests one after another and is
// reopened only if it breaks (see HTTPResult.Dials). Requests that fail are
// counted, not returned as an error; the error is for a bad spec or a
// cancelled ctx, in which case the result counts what was done so far.
//
// When the traffic crosses an XDP load balancer, the node's interface
// needs transmit checksum offload off; see the package documentation.
func HTTPLoad(ctx context.Context, node *topo.Node, spec HTTPSpec) (HTTPResult, error) {
	res := HTTPResult{Status: map[int]int{}, Errors: map[string]int{}, ServedBy: map[string]int{}}
	u, err := url.Parse(spec.URL)
	switch {
	case err != nil:
		return res, fmt.Errorf("%w: URL: %w", ErrInvalidSpec, err)
	case u.Scheme != "http":
		return res, fmt.Errorf("%w: URL %q: want an http:// URL", ErrInvalidSpec, spec.URL)
	case !isIP(u.Hostname()):
		return res, fmt.Errorf("%w: URL %q: want an IP address as host, nodes have no resolver", ErrInvalidSpec, spec.URL)
	case spec.Requests < 1:
		return res, fmt.Errorf("%w: Requests: %d: want at least 1", ErrInvalidSpec, spec.Requests)
	case spec.Connections < 0:
		return res, fmt.Errorf("%w: Connections: %d: want at least 1 (0 means 1)", ErrInvalidSpec, spec.Connections)
	case spec.Timeout < 0:
		return res, fmt.Errorf("%w: Timeout: %v: want a positive duration (0 means %v)", ErrInvalidSpec, spec.Timeout, DefaultHTTPTimeout)
	}
	conns := min(max(spec.Connections, 1), spec.Requests)
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = DefaultHTTPTimeout
	}

	var (
		mu    sync.Mutex
		dials atomic.Int64
		wg    sync.WaitGroup
	)
	dial := nodeDialer(node, &dials)
	start := time.Now()
	for i := range conns {
		share := spec.Requests / conns
		if i < spec.Requests%conns {
			share++
		}
		tr := &http.Transport{
			Proxy:               nil, // never the environment's proxy: the URL is inside the topology
			DialContext:         dial,
			MaxIdleConns:        1,
			MaxIdleConnsPerHost: 1,
			MaxConnsPerHost:     1,
			DisableCompression:  true,
		}
		client := &http.Client{
			Transport: tr,
			// A redirect is an answer to count, not to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			for range share {
				if ctx.Err() != nil {
					return
				}
				o := get(ctx, client, spec.URL, timeout)
				mu.Lock()
				o.addTo(&res)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Dials = int(dials.Load())
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("http load from %s to %s: %w", node.Name(), spec.URL, err)
	}
	return res, nil
}

// nodeDialer returns a DialContext that creates its sockets inside node,
// counting them in dials.
func nodeDialer(node *topo.Node, dials *atomic.Int64) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := node.Do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		if err != nil {
			return nil, err
		}
		dials.Add(1)
		return c, nil
	}
}

// outcome is one request's result.
type outcome struct {
	status   int // 0: no response
	err      error
	latency  time.Duration
	servedBy string
}

// get makes one request and reads the whole body, which a keep-alive
// connection needs before it can carry the next request.
func get(ctx context.Context, client *http.Client, u string, timeout time.Duration) outcome {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return outcome{err: err}
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	o := outcome{status: resp.StatusCode}
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err == nil {
		o.servedBy, _ = strings.CutPrefix(strings.TrimSuffix(first, "\n"), ServedByPrefix)
		if !strings.HasPrefix(first, ServedByPrefix) {
			o.servedBy = ""
		}
		_, err = io.Copy(io.Discard, br)
	} else if errors.Is(err, io.EOF) {
		err = nil // a body of one line without newline, or empty
	}
	o.latency = time.Since(start)
	o.err = err
	return o
}

// addTo counts o in r.
func (o outcome) addTo(r *HTTPResult) {
	if o.status != 0 {
		r.Status[o.status]++
	}
	if o.err != nil {
		r.Failed++
		r.Errors[errorKind(o.err)]++
		return
	}
	if o.status < 200 || o.status > 299 {
		r.Failed++
		return
	}
	r.OK++
	r.Latencies = append(r.Latencies, o.latency)
	if o.servedBy != "" {
		r.ServedBy[o.servedBy]++
	}
}

// errorKind reduces an error to a short name without addresses or ports,
// so that a thousand refused connections count as one kind.
func errorKind(err error) string {
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &errno):
		return errno.Error()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.Is(err, io.EOF):
		return "EOF"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	return err.Error()
}

func isIP(host string) bool {
	_, err := netip.ParseAddr(host)
	return err == nil
}
