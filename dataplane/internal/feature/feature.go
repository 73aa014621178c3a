// Package feature names the kernel features a failed load lacked. A kernel
// without a helper or map type that a program uses refuses the program
// with a verifier log ("invalid func unknown#99") or a bare EINVAL that
// does not say which feature is missing; probing each one the collection
// uses, after the failure, does.
package feature

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// MissingError is a load failure together with the kernel features the
// collection needs and the running kernel lacks. It matches both the
// original error and ebpf.ErrNotSupported with errors.Is.
type MissingError struct {
	Err error
	// Missing describes each missing feature and who needs it, e.g.
	// "helper bpf_skc_lookup_tcp for XDP programs (cl_xdp)".
	Missing []string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%v (the running kernel lacks %s)", e.Err, strings.Join(e.Missing, "; "))
}

// Unwrap returns the original error and ebpf.ErrNotSupported.
func (e *MissingError) Unwrap() []error { return []error{e.Err, ebpf.ErrNotSupported} }

// probes are the kernel probes Explain uses; tests replace them.
type probes struct {
	progType func(ebpf.ProgramType) error
	helper   func(ebpf.ProgramType, asm.BuiltinFunc) error
	mapType  func(ebpf.MapType) error
}

var kernel = probes{features.HaveProgramType, features.HaveProgramHelper, features.HaveMapType}

// Explain returns err, the error of loading spec, as a *MissingError when
// probing the running kernel finds program types, helpers or map types
// that spec uses and the kernel lacks; otherwise err itself. Only
// conclusive probe results count: the features package cannot probe some
// helpers (those of tracing programs, for one), which are then not named.
func Explain(spec *ebpf.CollectionSpec, err error) error {
	if err == nil {
		return nil
	}
	if missing := kernel.missing(spec); len(missing) > 0 {
		return &MissingError{Err: err, Missing: missing}
	}
	return err
}

func (p probes) missing(spec *ebpf.CollectionSpec) []string {
	lacks := func(err error) bool { return errors.Is(err, ebpf.ErrNotSupported) }
	users := map[string][]string{} // missing feature -> programs or maps needing it
	var order []string
	need := func(feature, user string) {
		if _, ok := users[feature]; !ok {
			order = append(order, feature)
		}
		users[feature] = append(users[feature], user)
	}
	for _, name := range sortedKeys(spec.Programs) {
		prog := spec.Programs[name]
		if lacks(p.progType(prog.Type)) {
			need(fmt.Sprintf("program type %v", prog.Type), name)
			continue
		}
		seen := map[asm.BuiltinFunc]bool{}
		for _, ins := range prog.Instructions {
			if !ins.IsBuiltinCall() {
				continue
			}
			fn := asm.BuiltinFunc(ins.Constant)
			if seen[fn] {
				continue
			}
			seen[fn] = true
			if lacks(p.helper(prog.Type, fn)) {
				need(fmt.Sprintf("helper %s for %v programs", HelperName(fn), prog.Type), name)
			}
		}
	}
	for _, name := range sortedKeys(spec.Maps) {
		m := spec.Maps[name]
		if lacks(p.mapType(m.Type)) {
			need(fmt.Sprintf("map type %v", m.Type), name)
		}
		if m.InnerMap != nil && lacks(p.mapType(m.InnerMap.Type)) {
			need(fmt.Sprintf("map type %v", m.InnerMap.Type), name+" (inner map)")
		}
	}
	out := make([]string, 0, len(order))
	for _, f := range order {
		out = append(out, fmt.Sprintf("%s (%s)", f, strings.Join(users[f], ", ")))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// HelperName is a helper's name as the kernel's documentation and
// verifier spell it: asm.FnSkcLookupTcp is "bpf_skc_lookup_tcp".
func HelperName(fn asm.BuiltinFunc) string {
	s := strings.TrimPrefix(fn.String(), "Fn")
	var b strings.Builder
	b.WriteString("bpf")
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i == 0 || !unicode.IsUpper(rune(s[i-1])) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
