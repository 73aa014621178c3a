package vm

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// ModuleDeps is a kernel's modules.dep: for each module file (relative to
// /lib/modules/<version>) the files it depends on, in the order modprobe
// would load them last-to-first.
type ModuleDeps struct {
	deps   map[string][]string // file -> dependency files
	byName map[string]string   // canonical module name -> file
}

// ParseModulesDep reads the "file: dep dep ..." lines of a modules.dep.
func ParseModulesDep(r io.Reader) (*ModuleDeps, error) {
	md := &ModuleDeps{deps: map[string][]string{}, byName: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		if !ok || file == "" {
			return nil, fmt.Errorf("modules.dep line %d: no ':' after the module file: %q", n, line)
		}
		md.deps[file] = strings.Fields(rest)
		md.byName[ModuleName(file)] = file
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return md, nil
}

// ModuleName is the canonical name of a module file or name: the base name
// without .ko and a compression suffix, with '-' replaced by '_' as the
// kernel does.
func ModuleName(file string) string {
	b := path.Base(file)
	for _, s := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, s)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// File returns the module file of a module name, if the tree has it as a
// loadable module.
func (md *ModuleDeps) File(name string) (string, bool) {
	f, ok := md.byName[ModuleName(name)]
	return f, ok
}

// Resolve returns the module files to load, in load order (dependencies
// first, each file once), for the named modules. Names the tree does not
// have as loadable modules are returned in missing: they are either built
// into the kernel or absent, which the caller tells apart with the kernel's
// modules.builtin.
func (md *ModuleDeps) Resolve(names []string) (order, missing []string) {
	seen := map[string]bool{}
	var visit func(file string, stack []string)
	visit = func(file string, stack []string) {
		if seen[file] {
			return
		}
		for _, s := range stack {
			if s == file { // a cycle: modules.dep never has one, but do not loop
				return
			}
		}
		// modules.dep lists the full transitive closure, most-dependent
		// first; visiting every dependency before the module itself gives a
		// correct order whatever the list's order is.
		deps := md.deps[file]
		for i := len(deps) - 1; i >= 0; i-- {
			visit(deps[i], append(stack, file))
		}
		seen[file] = true
		order = append(order, file)
	}
	for _, n := range names {
		f, ok := md.File(n)
		if !ok {
			missing = append(missing, n)
			continue
		}
		visit(f, nil)
	}
	return order, missing
}

// ParseModulesBuiltin reads a modules.builtin (one module file per line) and
// returns the set of canonical module names built into the kernel.
func ParseModulesBuiltin(r io.Reader) (map[string]bool, error) {
	set := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			set[ModuleName(line)] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	return set, nil
}
