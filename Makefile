# piforge: see README.md. `make demo` runs the main job on an embedded default; `make test` runs the tests.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES ?= $(CURDIR)/target/fixtures
DEMO ?= $(CURDIR)/target/demo
PIFORGE := $(CURDIR)/target/release/piforge

.PHONY: all build deps fixtures test lint demo bench bench-decompress bench-customize clean

all: build

build:
	$(CARGO) build --release

# System packages the tests and the demo need (installed when run as root).
deps:
	@bash tests/install-deps.sh

fixtures: deps
	bash tests/fixtures/make-fixtures.sh $(FIXTURES)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

test: fixtures
	PIFORGE_FIXTURES=$(FIXTURES) $(CARGO) test --release
	$(MAKE) --no-print-directory lint

demo: fixtures build
	@mkdir -p $(DEMO)
	@echo "== piforge inspect on an upstream-shaped Raspberry Pi OS trixie image (.img.xz)"
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) inspect $(FIXTURES)/trixie.img.xz
	@echo "== piforge customize: kernel cgroup flags, a config.txt setting, swap off (dry run, then for real)"
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) customize $(FIXTURES)/trixie.img.xz --dry-run \
	  --cmdline-add cgroup_enable=memory --cmdline-add cgroup_memory=1 --config arm_64bit=1 \
	  --rm /etc/rpi/swap.conf
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) customize $(FIXTURES)/trixie.img.xz -o $(DEMO)/trixie-custom.img \
	  --cmdline-add cgroup_enable=memory --cmdline-add cgroup_memory=1 --config arm_64bit=1 \
	  --rm /etc/rpi/swap.conf
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) inspect $(DEMO)/trixie-custom.img

# Benchmarks (results and the machine go into BENCHMARKS.md).
bench: bench-decompress bench-customize

bench-customize:
	bash benches/customize.sh

bench-decompress:
	bash benches/decompress.sh

clean:
	$(CARGO) clean
