# pserv: the two commands of the README's Quick start, and a few more.
#   make demo   installs dependencies, builds, and runs `pserv train`
#   make test   installs dependencies, builds from a clean tree, and runs every test
BUILD ?= build
JOBS ?= $(shell nproc)
# nvcc may live outside PATH (Debian's CUDA toolkit layout): point CMake at it when found.
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CMAKE_FLAGS ?=
ifneq ($(NVCC),)
CMAKE_FLAGS += -DCMAKE_CUDA_COMPILER=$(NVCC)
endif

.PHONY: all deps build test demo bench sanitize install clean

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

demo: build
	$(BUILD)/cli/pserv train

bench: build
	$(BUILD)/bench/pserv_bench_optim --json $(BUILD)/bench_optim.json

# ASan + UBSan build of everything, tests included.
sanitize: deps
	cmake -S . -B $(BUILD)-asan -DCMAKE_BUILD_TYPE=Debug -DPSERV_SANITIZE=ON -DPSERV_WITH_CUDA=OFF
	cmake --build $(BUILD)-asan -j$(JOBS)
	cd $(BUILD)-asan && ctest --output-on-failure

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD)-test $(BUILD)-asan
