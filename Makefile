# Thin wrapper over Meson for the README's commands. Everything real lives
# in meson.build; this file only names the entry points and the Debian
# packages moor needs (the one place dependencies are declared).

BUILD ?= build
MESON_SETUP = meson setup --reconfigure
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Build: meson, ninja, pkg-config, a C compiler. Library: liburcu.
# Tests: cmocka, valgrind, spin (models), clang + its sanitizer runtime.
# Benchmark baselines only: glib. Apps: json-c, QEMU.
DEB_PACKAGES = meson ninja-build pkg-config gcc clang libclang-rt-dev \
	liburcu-dev libcmocka-dev libjson-c-dev libglib2.0-dev \
	valgrind spin clang-format \
	libmicrohttpd-dev libcurl4-openssl-dev qemu-system-x86 qemu-utils

.PHONY: all deps build check demo mutants bench bench-vmd callgrind callgrind-vmd ci format clean

all: build

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$(echo $$missing | sed 's/^/ /')"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

check: build
	meson test -C $(BUILD) --print-errorlogs --no-suite slow

# The main job: moor-vmd with 8 real QEMUs, one frozen, a SIGKILL and a
# restart; prints its report (apps/demo/demo.c). Under 2 minutes.
demo: build
	$(BUILD)/apps/demo/moor-vmd-demo --daemon $(BUILD)/apps/vmd/moor-vmd

# The standing mutation check (tests/mutants/run): every mutant in
# tests/mutants must be killed by the tests. Scratch tree and builds in
# $(MUTANTS_DIR).
MUTANTS_DIR ?= build-mutants

mutants: deps
	MUTANTS_DIR=$(MUTANTS_DIR) tests/mutants/run

bench: build
	$(BUILD)/bench/moor-bench

# The daemon's figures against real QEMU (bench/vmd/vmd-bench.c); a few
# minutes. `BENCH_VMD_ARGS=--quick` for a short run, `--json` for scripts.
bench-vmd: build
	$(BUILD)/bench/vmd/moor-vmd-bench --daemon $(BUILD)/apps/vmd/moor-vmd $(BENCH_VMD_ARGS)

callgrind: build
	bench/callgrind.sh $(BUILD)/bench/moor-bench

# Instructions per GET .../state inside moor-vmd (bench/vmd/callgrind-state.sh).
callgrind-vmd: build
	bench/vmd/callgrind-state.sh $(BUILD)/apps/vmd/moor-vmd

ci:
	.ci/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-tsan build-*/
