package lb

import (
	"errors"
	"sync"

	"github.com/cilium/ebpf"
)

var possibleCPUs = sync.OnceValue(func() int {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		// Load has already succeeded in reading the same value.
		return 1
	}
	return n
})

func isNotExist(err error) bool { return errors.Is(err, ebpf.ErrKeyNotExist) }
