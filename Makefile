# Developer entry points. `make test` is the one command that runs every test: it installs the external
# programs the tests start (memcached, ...) and then runs the unit, integration and doc tests.

CARGO ?= cargo

.PHONY: test test-deps

test: test-deps
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

test-deps:
	scripts/install-test-deps.sh
