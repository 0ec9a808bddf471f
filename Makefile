# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench stress sysdeps image clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Debian packages the tests drive: tmux (terminal-client tests), kubectl (renders deploy/k8s),
# bubblewrap (the sandbox for codex's read-only / workspace-write process starts),
# openssl (a throw-away TLS certificate).
sysdeps:
	@command -v tmux >/dev/null && command -v kubectl >/dev/null && command -v bwrap >/dev/null && command -v openssl >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq tmux kubectl bubblewrap openssl; }

# The container image, from Debian packages (no registry needed); then a smoke test of it.
# PODMAN / UE_PODMAN_RUN_OPTS adapt podman to hosts with hybrid cgroups (see deploy/).
image: $(STAMP)
	@command -v podman >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq podman buildah debootstrap tini runc; }
	deploy/build-image.sh $(PY)
	deploy/smoke-image.sh localhost/unified-exec:latest $(PY)

test: lint typecheck sysdeps
	$(PY) -m pytest -n $${UE_TEST_WORKERS:-3} --durations=25

# Long fuzz/load/chaos runs (tests/stress in long mode); `make test` runs their short mode.
stress: $(STAMP)
	UE_STRESS=long $(PY) -m pytest tests/stress -q -s

bench: $(STAMP)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/remote.py
	$(PY) benchmarks/tools_overhead.py
	$(PY) benchmarks/chart.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
