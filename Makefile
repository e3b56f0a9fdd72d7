# pserv: the two commands of the README's Quick start, and a few more.
#   make demo   installs dependencies, builds, and runs `pserv train`
#   make test   installs dependencies, builds from a clean tree, and runs every test, then the
#               transport, multi-process and cluster tests again under ThreadSanitizer
BUILD ?= build
JOBS ?= $(shell nproc)
# nvcc may live outside PATH (Debian's CUDA toolkit layout): point CMake at it when found.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CMAKE_FLAGS ?=
ifneq ($(NVCC),)
CMAKE_FLAGS += -DCMAKE_CUDA_COMPILER=$(NVCC)
endif

# The ThreadSanitizer run: any report fails its test (exit code 66). die_after_fork=0 lets a test
# fork from Criterion's multi-threaded test process; UCX's memory hooks (libucm) intercept
# madvise in exiting threads after TSan has torn them down, so they are off.
TSAN_ENV = TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 die_after_fork=0 \
	suppressions=$(CURDIR)/tests/tsan.supp" UCX_MEM_EVENTS=no
define tsan_steps
	rm -rf $(BUILD)-tsan
	cmake -S . -B $(BUILD)-tsan -DCMAKE_BUILD_TYPE=Debug -DPSERV_TSAN=ON -DPSERV_WITH_CUDA=OFF \
	      -DPSERV_BUILD_BENCH=OFF
	cmake --build $(BUILD)-tsan -j$(JOBS)
	cd $(BUILD)-tsan && $(TSAN_ENV) ctest -L 'transport|multiproc|cluster' --output-on-failure
endef

.PHONY: all deps build test demo bench sanitize tsan install clean

all: build

deps:
	scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPSERV_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

test: deps
	rm -rf $(BUILD)-test
	$(MAKE) build BUILD=$(BUILD)-test
	cd $(BUILD)-test && ctest --output-on-failure
	$(tsan_steps)

demo: build
	$(BUILD)/cli/pserv train

bench: build
	$(BUILD)/bench/pserv_bench_optim --json $(BUILD)/bench_optim.json

# ASan + UBSan build of everything, tests included.
sanitize: deps
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DPSERV_SANITIZE=ON -DPSERV_WITH_CUDA=OFF
	cmake --build $(BUILD)-asan -j$(JOBS)
	cd $(BUILD)-asan && ctest --output-on-failure

# ThreadSanitizer build (from clean) of the transport, multi-process and cluster tests.
tsan: deps
	$(tsan_steps)

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-test $(BUILD)-asan $(BUILD)-tsan
