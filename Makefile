# ckbpool — every target bootstraps what it needs (venv, deps), so a fresh machine needs only `make demo` / `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/ckbpool
export CKBPOOL_CACHE := $(CACHE)
PYTEST_ARGS ?=
# pytest-xdist workers (tests/conftest.py schedules a test file as one unit and the files that share the docker engine,
# a kubelet or terraform's cache as one unit each); 2 (this machine's cores) by default, 0 = one process
TEST_WORKERS ?= 2

.PHONY: venv deps test test-unit test-integration lint bench abuse chaos demo fuzz clean

$(BIN)/.installed: pyproject.toml setup.py src/ckbpool/image/setup.py src/ckbpool/ckb/_eaglesong.c src/ckbpool/sv2/_chacha.c src/ckbpool/bus/_sharecodec.c
	@# the Noise cipher (src/ckbpool/sv2/_chacha.c) links OpenSSL's libcrypto: its headers before the build
	@test -f /usr/include/openssl/evp.h || { echo "venv: installing libssl-dev (OpenSSL's headers, for the Noise cipher)"; \
	  [ "$$(id -u)" = 0 ] || { echo "venv: need root, or: sudo apt-get install libssl-dev" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libssl-dev; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev,cloud,hosts]'
	touch $@

venv: $(BIN)/.installed

## deps: heavy, cached, idempotent parts (ckb build, SRI interop harness, system packages)
deps: venv
	bash scripts/deps.sh

test: venv deps
	$(BIN)/pytest -q -n $(TEST_WORKERS) --durations=25 $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -q -m unit $(PYTEST_ARGS)

test-integration: venv deps
	$(BIN)/pytest -q -m integration $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy --strict src

bench: venv deps
	$(BIN)/python -m benchmarks.run --out docs/benchmarks.md

## abuse: issue 15's abuse runs (limits under attack while an honest miner mines), written to docs/abuse.md
abuse: venv deps
	$(BIN)/python -m benchmarks.abuse --out docs/abuse.md

## chaos: issue 15's chaos runs -- kill -9 of stratum (process or worker child) / accounting / block maker / Kafka /
## Redis under load, books checked against every miner's answers (tests/chaos, docs/chaos.md). CHAOS_MINUTES
## (default 10) of Kafka topology, then CHAOS_EMBEDDED_MINUTES (default 10) of the embedded one; CHAOS_SEED repeats
## a run; `make test` runs a short one.
CHAOS_MINUTES ?= 10
CHAOS_EMBEDDED_MINUTES ?= 10
chaos: venv deps
	CHAOS_MINUTES=$(CHAOS_MINUTES) CHAOS_EMBEDDED_MINUTES=$(CHAOS_EMBEDDED_MINUTES) $(BIN)/pytest -q -s -m chaos tests/chaos $(PYTEST_ARGS)

## demo: local target on a dev chain + CPU miners, live view until Ctrl-C (DEMO_ARGS="--blocks 3 --duration 120" bounds it)
demo: venv deps
	$(BIN)/python -m ckbpool.demo $(DEMO_ARGS)

## fuzz: atheris (coverage-guided) on the SV2 decoders, Noise, the server state machine and the template parser
fuzz: venv
	$(BIN)/pip install -q 'atheris>=3.0,<4' || echo "atheris unavailable: benchmarks.fuzz falls back to hypothesis"
	$(BIN)/python -m benchmarks.fuzz --seconds $${FUZZ_SECONDS:-60} --jobs $${FUZZ_JOBS:-1}

clean:
	rm -rf build $(VENV) src/*.egg-info src/ckbpool/ckb/*.so
