# piforge: see README.md. `make demo` runs the main job on an embedded default; `make test` runs the tests.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES ?= $(CURDIR)/target/fixtures
DEMO ?= $(CURDIR)/target/demo
PIFORGE := $(CURDIR)/target/release/piforge

.PHONY: all build install deps fixtures test test-asan lint demo e2e bench bench-decompress bench-customize bench-build clean

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

# The libext2fs shim built with AddressSanitizer (PIFORGE_ASAN=1, see build.rs), then the tests
# that drive it: the ext4 and disk unit tests, customize on every fixture, and the
# corrupted-ext4 property tests. ASan's report exits 86 (not piforge's 1). The test binaries run
# with libasan preloaded (cargo's runner), so it comes first in their library list and in the
# piforge processes they start, as ASan requires; leak checks are off, as the preload reaches
# e2fsck and debugfs too. It shares the target directory: PIFORGE_ASAN changes only piforge's
# own build script and crate (rerun-if-env-changed), so switching rebuilds piforge alone, not
# its dependencies (the next plain build rebuilds it back). `.ci/run` runs it last.
ASAN_TARGET ?= $(CURDIR)/target
LIBASAN = $(shell cc -print-file-name=libasan.so)
HOST_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')
ASAN_ENV = PIFORGE_ASAN=1 ASAN_OPTIONS=exitcode=86:detect_leaks=0 \
  CARGO_TARGET_$(HOST_TRIPLE)_RUNNER="env LD_PRELOAD=$(LIBASAN)" \
  CARGO_TARGET_DIR=$(ASAN_TARGET) PIFORGE_FIXTURES=$(FIXTURES)
test-asan: fixtures
	@test -e "$(LIBASAN)" || { echo "test-asan: the C compiler has no libasan (Debian: libasan8, with gcc)"; exit 1; }
	$(ASAN_ENV) $(CARGO) test --release --lib -- fs::ext4 disk::
	$(ASAN_ENV) $(CARGO) test --release --test ext4_corruption --test customize

# The main job on an embedded default: an upstream-shaped Raspberry Pi OS trixie image and
# stand-in release artifacts are generated, the example three-node cluster is built from the
# repo's node-profiles/, and `piforge check` judges every node image.
DEMO_K8S ?= 1.36.4
demo: fixtures build
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@bash tests/fixtures/make-artifacts.sh $(DEMO)/artifacts $(DEMO_K8S)
	@cd $(DEMO) && $(PIFORGE) init . >/dev/null
	@sed -i 's|source: ./2025-11-24-raspios-trixie-arm64-lite.img.xz|source: $(FIXTURES)/trixie.img.xz|' $(DEMO)/cluster.yaml
	@# A login key of the demo's own in place of the template's placeholder (which piforge refuses).
	@ssh-keygen -q -t ed25519 -N '' -C demo@piforge -f $(DEMO)/demo_ed25519
	@sed -i "s|ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDER[A-Za-z]* you@laptop|$$(cat $(DEMO)/demo_ed25519.pub)|" $(DEMO)/cluster.yaml
	@echo "== the upstream image (an upstream-shaped stand-in made by tests/fixtures/make-fixtures.sh)"
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) inspect $(FIXTURES)/trixie.img.xz
	@echo; echo "== piforge build: the example cluster in $(DEMO)/cluster.yaml (1 control plane, 2 workers)"
	PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) build --spec $(DEMO)/cluster.yaml --out $(DEMO)/dist \
	  --artifacts $(DEMO)/artifacts --allow-unpinned
	@echo; echo "== piforge check on every node image"
	@for img in $(DEMO)/dist/*.img; do printf '%-40s ' "$$img"; PIFORGE_CACHE=$(DEMO)/cache $(PIFORGE) --quiet check $$img | tail -1; done
	@echo
	@echo "The node images are in $(DEMO)/dist (SHA256SUMS beside them); secrets in $(DEMO)/secrets."
	@echo "They hold stand-in binaries: to make a real cluster, on a machine with internet access:"
	@echo "  piforge init mycluster && cd mycluster    # edit cluster.yaml: image, ssh key, addresses"
	@echo "  piforge fetch cluster.yaml                # downloads and pins the release artifacts"
	@echo "  piforge build cluster.yaml                # one image per node in dist/"
	@echo "then write each image to its card (dd if=dist/NODE.img of=/dev/sdX bs=4M conv=fsync) and boot."

# Boots the node images piforge builds under QEMU and checks each node comes up configured
# (root; builds a cached bootable stand-in image on first use). See tests/e2e/run.sh.
e2e:
	bash tests/e2e/run.sh

# Benchmarks (results and the machine go into BENCHMARKS.md).
bench: bench-decompress bench-customize bench-build

bench-build:
	bash benches/build.sh

bench-customize:
	bash benches/customize.sh

bench-decompress:
	bash benches/decompress.sh

clean:
	$(CARGO) clean
