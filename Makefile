# piforge: see README.md. `make demo` runs the main job on an embedded default; `make test` runs the tests.
SHELL := /bin/bash
CARGO ?= cargo
FIXTURES ?= $(CURDIR)/target/fixtures
DEMO ?= $(CURDIR)/target/demo
PIFORGE := $(CURDIR)/target/release/piforge

.PHONY: all build install deps fixtures test test-asan lint demo e2e bench bench-decompress bench-customize bench-build bench-formats bench-flash clean

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

# The main job on an embedded default, offline: an upstream-shaped Raspberry Pi OS trixie image,
# stand-ins for everything a real cluster downloads (release files, one tiny OCI image layout per
# container image, a signed apt repository with the .deb a node needs, served on 127.0.0.1 for
# `fetch`), the example three-node cluster fetched and built from the repo's node-profiles/, and
# `piforge check` on every node image (tests/fixtures/demo.sh; tests/demo.rs runs it too).
DEMO_K8S ?= 1.36.4
demo: fixtures build
	@bash tests/fixtures/demo.sh $(FIXTURES) $(DEMO) $(PIFORGE) $(DEMO_K8S)
	@echo
	@echo "The node images are in $(DEMO)/dist (SHA256SUMS beside them); secrets in $(DEMO)/secrets."
	@echo "They hold stand-in binaries and images: to make a real cluster, on a machine with internet access"
	@echo "(piforge is target/release/piforge; \`make install\` puts it in ~/.cargo/bin):"
	@echo "  piforge init mycluster && cd mycluster        # edit cluster.yaml: image, ssh key, addresses"
	@echo "  piforge fetch cluster.yaml --allow-unpinned   # downloads and pins the release files, images and .debs"
	@echo "  piforge build cluster.yaml                    # one image per node in dist/"
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
