# Developer entry points. `make test` is the one command that runs every test: it installs the external
# programs the tests start (memcached, ...) and then runs the unit, integration and doc tests.

CARGO ?= cargo

.PHONY: test test-deps

test: test-deps
	# The e2e tests start the binaries themselves: build them first, outside any test's hang guard.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

test-deps:
	scripts/install-test-deps.sh
	scripts/build-landed-release.sh

.PHONY: run demo-origin bench

# Runs the sidecar: 127.0.0.1:8080 in front of http://127.0.0.1:8000, admin on 127.0.0.1:9091, embedded store
# unless ETAGD_MEMCACHED (or ARGS="--memcached host:port") names Memcached servers.
run:
	$(CARGO) run --release -p etagd -- $(ARGS)

# A demo app for the quick start: a slow JSON view like the seed's (DELAY_MS, default 2000).
DELAY_MS ?= 2000
demo-origin:
	$(CARGO) run --release -p etagd-demo-origin -- --listen 127.0.0.1:8000 --delay-ms $(DELAY_MS)

# The benchmark harness (etagd beside Varnish and nginx); see BENCHMARKS.md.
bench:
	bench/run.sh $(ARGS)
