# spirt: the two commands of the README are `make demo` and `make test`.
#
#   make deps        install missing Debian packages (scripts/deps.sh)
#   make build       optimised build in build/ (build/spirt, build/spirt.so)
#   make build-san   the same with AddressSanitizer + UBSan in build-san/
#   make test        deps, both builds, every test of both (CTest)
#   make demo        deps, build, then the main job on the embedded default
#   make bench       every benchmark (needs `scripts/deps.sh --bench`)
#   make check-long  long and statistical experiments (accuracy, chaos)
#   make clean       remove both build folders

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST ?= ctest

.PHONY: all deps build build-san test test-fast demo bench check-long clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@$(CMAKE) -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	@$(CMAKE) --build build -j $(JOBS)

build-san: deps
	@$(CMAKE) -S . -B build-san -DCMAKE_BUILD_TYPE=Debug -DSPIRT_SANITIZE=ON \
		-DCMAKE_C_FLAGS_DEBUG="-O1 -g" >/dev/null
	@$(CMAKE) --build build-san -j $(JOBS)

# The optimised build runs everything but the long experiments; the sanitizer
# build runs everything but the tests labelled `slow` (accuracy runs that
# would take many minutes under ASan and prove nothing more).
test: build build-san
	@echo "== tests: optimised build =="
	@$(CTEST) --test-dir build --output-on-failure -j $(JOBS) -LE long
	@echo "== tests: sanitizer build (ASan + UBSan) =="
	@$(CTEST) --test-dir build-san --output-on-failure -j $(JOBS) -LE "long|slow"

test-fast: build
	@$(CTEST) --test-dir build --output-on-failure -j $(JOBS) -LE "long|slow"

# The main job: 4 peers, each with its own redis-server and the module,
# training the mlp on Fashion-MNIST; the last line names the run folder.
demo: build
	@build/spirt train --peers 4 --model mlp

bench: build
	@scripts/deps.sh --bench
	@build/spirt bench all

check-long: build
	@$(CTEST) --test-dir build --output-on-failure -L long

clean:
	rm -rf build build-san
