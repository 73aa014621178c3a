package bench

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/agent"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// AgentCases loads a backend agent with a local and a transparent VIP and
// returns the TC cases of its per-packet cost, all TC_ACT_OK:
//
//   - "agent decap gue v4": the egress program removes the GUE
//     headers of an established TCP packet to a local-mode VIP;
//   - "agent decap+dnat v4": the same for a
//     transparent-mode VIP, which also rewrites the destination to the
//     application's address and tracks the connection. The same flow runs
//     every time, so after the check run each call finds the connection's
//     entry and refreshes it (lookup and update in place), the steady state
//     of an established connection, not the insert of a new one;
//   - "agent reply rewrite v4": the ingress program gives the reply of that
//     tracked connection the VIP back as its source.
//
// Each case's check run verifies, from the agent's counters, that the
// program took that path. The caller closes the returned Closer.
func AgentCases() (cases []TCCase, closer io.Closer, err error) {
	a, err := agent.Load(agent.Options{ConnTableSize: 65536}, agent.Config{})
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	// RFC 2544 benchmark addresses, as in the LB cases; nothing is sent.
	backend := netip.MustParseAddr("198.19.0.5")
	lbNode := netip.MustParseAddr("198.18.0.1")
	vipLocal := agent.VIP{Addr: netip.MustParseAddr("198.18.1.1"), Port: 80, Proto: l4.TCP}
	vipTrans := agent.VIP{Addr: netip.MustParseAddr("198.18.1.3"), Port: 80, Proto: l4.TCP}
	app := netip.AddrPortFrom(backend, 8080)
	client := netip.MustParseAddrPort("198.18.2.7:40000")
	if err := a.AddBackendAddr(backend); err != nil {
		return nil, nil, err
	}
	if err := a.AddVIP(vipLocal, agent.Local, netip.AddrPort{}); err != nil {
		return nil, nil, err
	}
	if err := a.AddVIP(vipTrans, agent.Transparent, app); err != nil {
		return nil, nil, err
	}

	tunnel := func(vip agent.VIP) []byte {
		inner := pkttest.TCP(pkttest.Flow{
			Src: client, Dst: netip.AddrPortFrom(vip.Addr, vip.Port), DF: true, Payload: make([]byte, 6),
		}, pkttest.ACK)
		return pkttest.GUE(pkttest.Flow{
			Src: netip.AddrPortFrom(lbNode, 49200), Dst: netip.AddrPortFrom(backend, pkttest.DefaultGUEPort), DF: true,
		}, pkttest.IPPacket(inner))
	}
	reply := pkttest.TCP(pkttest.Flow{Src: app, Dst: client, DF: true, Payload: make([]byte, 6)}, pkttest.ACK)

	// The connection the reply belongs to, so that the reply case does not
	// depend on the transparent case running first.
	if _, err := a.Egress().Run(&ebpf.RunOptions{Data: tunnel(vipTrans), DataOut: make([]byte, 512)}); err != nil {
		return nil, nil, fmt.Errorf("open benchmark connection: %w", err)
	}

	// counted returns a check that the counter named grew since the last
	// check and that the connection table holds conns entries.
	last, err := a.Counters()
	if err != nil {
		return nil, nil, err
	}
	counted := func(name string, conns int) func() error {
		return func() error {
			now, err := a.Counters()
			if err != nil {
				return err
			}
			before := last.Stats[name]
			last = now
			if now.Stats[name] <= before {
				return fmt.Errorf("agent counter %s did not grow", name)
			}
			if now.Connections != conns {
				return fmt.Errorf("agent tracks %d connections, want %d", now.Connections, conns)
			}
			return nil
		}
	}
	cases = []TCCase{
		{Name: "agent decap gue v4", Program: a.Egress(), Frame: tunnel(vipLocal), Action: pkttest.TCActOK,
			Check: counted("deliver_local", 1)},
		{Name: "agent decap+dnat v4", Program: a.Egress(), Frame: tunnel(vipTrans), Action: pkttest.TCActOK,
			Check: counted("deliver_transparent", 1)},
		{Name: "agent reply rewrite v4", Program: a.Ingress(), Frame: reply, Action: pkttest.TCActOK,
			Check: counted("reply_rewritten", 1)},
	}
	return cases, a, nil
}
