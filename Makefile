# Two commands for a new user: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# `make mutation`: the modules mutated, the fast in-process tests run against each mutant, and
# mutants not counted (read_injuries is tested elsewhere, with its own tests).
MUTATE         ?= agents/auto_healer/decision.py agents/auto_healer/outcomes.py agents/auto_healer/contracts.py agents/auto_healer/envelope.py agents/auto_healer/admission.py
MUTATION_TESTS ?= tests/test_contracts.py tests/test_decision.py tests/test_envelope.py
MUTATION_SKIP  ?=

.PHONY: bytecode demo test test-cluster check bench bench-publish bench-fleet schema proto manifests mutation lock screenshots clean test-slow

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "auto-healer needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(MAKE) --no-print-directory bytecode
	touch $(STAMP)

# The bytecode of our own package, as pip writes it when it installs a wheel (the image and the
# GitHub action): an editable install has none, and with PYTHONDONTWRITEBYTECODE set every
# `auto-healer` run would compile the package from source again (~50 ms of a one-shot heal).
bytecode:
	$(BIN)/python -m compileall -q agents

demo: $(STAMP)
	$(BIN)/auto-healer demo

# One worker per core, at most 4: most of a test's time is spent waiting for real servers.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses 4

# The slow tests on a real 3-node JetStream cluster (node loss mid-burst, KV outages) and two
# replicas against a busy remote, a few minutes.
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster tests/test_cluster.py tests/test_fleet_pages.py tests/test_push_race_cluster.py -s

# Every test `make test` leaves out: the cluster ones and the few that wait longest (a fresh
# install from the lock files, a heal longer than the ack wait, NATS restarted under the agent,
# SIGTERM mid-burst or mid-heal, the pager down then back, a dead letter that cannot be
# written, the KV store or NATS frozen under a write, setup-nats as admin). CI runs it too.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "cluster or slow"

check: $(STAMP)
	$(BIN)/ruff check agents tests bench
	$(BIN)/ruff format --check agents tests bench
	$(BIN)/mypy

# `make bench` writes bench/results/last-run.* only; `make bench-publish` also refreshes the
# checked-in bench/results/latest.* and the table quoted in docs/benchmarks.md.
bench: $(STAMP) bytecode
	$(BIN)/python -m bench.run

# heals/s and time to heal with 1, 2 and 4 replicas on a 3-node cluster (about a minute)
bench-fleet: $(STAMP)
	$(BIN)/python -m bench.fleet

bench-publish: $(STAMP) bytecode
	$(BIN)/python -m bench.run --publish

# docs/console/*.png: each console page in Debian's headless Chromium, on a real agent (~15 s)
screenshots: $(STAMP)
	$(BIN)/python -m bench.screenshots

mutation: $(STAMP)
	$(BIN)/python -m bench.mutation $(MUTATE) --tests $(MUTATION_TESTS) --skip $(MUTATION_SKIP)

# The pinned, hashed dependencies the image and the GitHub action install (and the dev tools').
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --build-deps-for wheel

lock: $(STAMP)
	$(PIP_COMPILE) --output-file requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra dev --output-file requirements-dev.lock pyproject.toml

schema: $(STAMP)
	$(BIN)/auto-healer schema > schema/playbook.schema.json

# The aura.core.v1 Python module, from proto/ by grpcio-tools' protoc (checked in; a test
# checks it matches a fresh generation).
PROTO_OUT := agents/auto_healer/proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) \
		proto/aura/core/v1/event.proto

# deploy/k8s/ is the Helm chart deploy/helm/auto-healer rendered by Helm's engine (a test checks).
manifests: $(STAMP)
	$(BIN)/python deploy/helm/render.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info agents/*.egg-info
