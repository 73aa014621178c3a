# Sluice: build, test and run. Targets:
#   deps        install Debian packages and Go modules the project needs
#   generate    rebuild the committed bpf2go output (needs clang)
#   build       go build ./... and bin/sluice
#   test        unit, packet and scenario tests (as root, SLUICE_REQUIRE_PRIV=1)
#   bench       benchmarks into bench/results
#   vm-test     the tests in qemu guests on Debian 6.1 and 6.12 kernels (slow)
#   lint        gofmt, go vet, staticcheck
#   quickstart  a short guided run of Sluice
#   clean       remove build output

# Go from /usr/local/go when it is not on PATH already.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all deps bpffs generate build test bench lint quickstart clean

all: build

deps:
	@bash scripts/deps.sh

bpffs:
	@bash scripts/bpffs.sh

generate:
	go generate ./...

build:
	go build ./...
	@if [ "$$(go list -f '{{.Name}}' ./cmd/sluice 2>/dev/null)" = main ]; then \
		echo "go build -o bin/sluice ./cmd/sluice"; go build -o bin/sluice ./cmd/sluice; fi

test: deps bpffs
	SLUICE_REQUIRE_PRIV=1 go test -count=1 -timeout 30m ./...

bench: deps bpffs
	mkdir -p bench/results
	go test -run '^$$' -bench . -benchmem ./ctl/maglev | tee bench/results/maglev.txt
	go run ./cmd/sluice bench -out bench/results

lint:
	@files=$$(gofmt -l .); if [ -n "$$files" ]; then echo "gofmt -l: not formatted:"; echo "$$files"; exit 1; fi
	go vet ./...
	go tool staticcheck ./...

quickstart: deps bpffs
	go run ./cmd/sluice sim run scenarios/quickstart.yaml

clean:
	rm -rf bin
	rm -f bench/results/*.tmp

# Kernel matrix (docs/kernels.md): the tests inside qemu guests per kernel,
# a kernel x package/scenario table at the end. .ci/run runs it for the
# packet tests on 6.1 only.
KERNELS ?= 6.1 6.12
PKGS ?= ./...
.PHONY: vm-test
vm-test:
	@bash scripts/vm-deps.sh $(KERNELS)
	go run ./vm/cmd/vmmatrix -kernels "$(KERNELS)" $(PKGS)
