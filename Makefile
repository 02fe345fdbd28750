# piforge: see README.md. `make demo` runs the main job on an embedded default; `make test` runs the tests.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES ?= $(CURDIR)/target/fixtures

.PHONY: all build deps fixtures test demo bench lint clean

all: build

build:
	$(CARGO) build --release

# System packages the tests and the demo need (installed when run as root).
deps:
	@tests/install-deps.sh

fixtures: deps
	tests/fixtures/make-fixtures.sh $(FIXTURES)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: fixtures
	PIFORGE_FIXTURES=$(FIXTURES) $(CARGO) test --release
	$(MAKE) lint

clean:
	$(CARGO) clean
