# piforge: see README.md. `make demo` runs the main job on an embedded default; `make test` runs the tests.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES ?= $(CURDIR)/target/fixtures
DEMO ?= $(CURDIR)/target/demo
PIFORGE := $(CURDIR)/target/release/piforge

.PHONY: all build install deps fixtures test lint demo e2e bench bench-decompress bench-customize bench-build bench-formats bench-flash clean

all: build

build:
	$(CARGO) build --release

# The binary in ~/.cargo/bin (cargo's install root; CARGO_INSTALL_ROOT moves it).
install:
	$(CARGO) install --locked --path .

# System packages the tests and the demo need (installed when run as root).
deps:
	@bash tests/install-deps.sh

fixtures: deps
	bash tests/fixtures/make-fixtures.sh $(FIXTURES)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	# The library builds without the binary's dependencies (clap, indicatif, ctrlc).
	$(CARGO) check --release --lib --no-default-features

test: fixtures
	PIFORGE_FIXTURES=$(FIXTURES) $(CARGO) test --release --lib --bins --tests
	$(MAKE) --no-print-directory lint

# The main job on an embedded default: an upstream-shaped Raspberry Pi OS trixie image and
# stand-in release artifacts are generated, the example three-node cluster is built from the
# repo's node-profiles/, and `piforge check` judges every node image.
DEMO_K8S ?= 1.36.4
demo: fixtures build
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@bash tests/fixtures/make-artifacts.sh $(DEMO)/artifacts $(DEMO_K8S)
	@cd $(DEMO) && $(PIFORGE) init . >/dev/null
	@sed -i 's|source: ./2025-11-24-raspios-trixie-arm64-lite.img.xz|source: $(FIXTURES)/trixie.img.xz|' $(DEMO)/cluster.yaml
	@echo "== the upstream image (an upstream-shaped stand-in made by tests/fixtures/make-fixtures.sh)"
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) inspect $(FIXTURES)/trixie.img.xz
	@echo; echo "== piforge build: the example cluster in $(DEMO)/cluster.yaml (1 control plane, 2 workers)"
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) build --spec $(DEMO)/cluster.yaml --out $(DEMO)/dist \
	  --artifacts $(DEMO)/artifacts --allow-unpinned 2>$(DEMO)/build-warnings.txt
	@echo; echo "== piforge check on every node image"
	@for img in $(DEMO)/dist/*.img; do printf '%-40s ' "$$img"; PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) check $$img | tail -1; done
	@echo
	@echo "The node images are in $(DEMO)/dist (SHA256SUMS beside them); secrets in $(DEMO)/secrets."
	@echo "They hold stand-in binaries: to make a real cluster, on a machine with internet access:"
	@echo "  piforge init mycluster && cd mycluster    # edit cluster.yaml: image, ssh key, addresses"
	@echo "  piforge fetch cluster.yaml                # downloads and pins the release artifacts"
	@echo "  piforge build cluster.yaml                # one image per node in dist/"
	@echo "then write each image to its card (piforge flash dist/NODE.img /dev/sdX) and boot."

# Boots the node images piforge builds under QEMU and checks each node comes up configured
# (root; builds a cached bootable stand-in image on first use). See tests/e2e/run.sh.
e2e:
	bash tests/e2e/run.sh

# Benchmarks (results and the machine go into BENCHMARKS.md).
bench: bench-decompress bench-customize bench-build bench-formats bench-flash

bench-build:
	bash benches/build.sh

bench-formats:
	bash benches/formats.sh

# As root (a loop device is one of the targets).
bench-flash:
	bash benches/flash.sh

bench-customize:
	bash benches/customize.sh

bench-decompress:
	bash benches/decompress.sh

clean:
	$(CARGO) clean
