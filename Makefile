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

# `make bench-vmd` only: libvirtd and its C API, the daemon moor-vmd is
# measured against (bench/vmd/vs-libvirt.c). Neither the build nor
# `make check` needs them; meson builds the side-by-side part when
# libvirt-dev is there.
BENCH_DEB_PACKAGES = libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev

.PHONY: all deps deps-bench build check demo mutants bench bench-vmd callgrind callgrind-vmd ci format clean

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

deps-bench:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_DEB_PACKAGES)"

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

# moor-vmd and libvirtd side by side on the same QEMU (bench/vmd/vs-libvirt.c);
# under 10 minutes. `BENCH_VMD_ARGS=--quick` for a short run, `--json` for
# scripts; `BENCH_VMD_MODE=` for moor-vmd's own figures alone (vmd-bench.c).
# The reconfigure lets meson find libvirt-dev installed by deps-bench.
BENCH_VMD_MODE ?= --vs-libvirt
bench-vmd: deps-bench build
	@[ -z "$(BENCH_VMD_MODE)" ] || grep -q '"name": "libvirt"' $(BUILD)/meson-info/intro-dependencies.json 2>/dev/null || \
		{ $(MESON_SETUP) $(BUILD) && ninja -C $(BUILD); }
	$(BUILD)/bench/vmd/moor-vmd-bench --daemon $(BUILD)/apps/vmd/moor-vmd $(BENCH_VMD_MODE) $(BENCH_VMD_ARGS)

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
