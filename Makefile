# The single source of commands: README, CI and developers all use these targets.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed
# Default test run: everything except the `slow` learning tests, on both cores.
PYTEST  := $(PY) -m pytest -n 2

.PHONY: install run test test-all lint type bench zoo clean

install: $(STAMP)

# The CPU build of torch that lies on this disk goes in first, so that no dependency
# can pull a multi-GB CUDA build; then the project, editable, with its extras (ray, sweep ...).
$(STAMP): pyproject.toml
	test -d .venv || python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,minigrid,export,ray,sweep,metaworld,popgym]'
	touch $(STAMP)

# A curriculum with NB2's retention (distillation + task ids; the critic restarts at each task).
# By default the quick one, CartPole-v1 then its mirror (160k steps); the full suite is
# `make run SUITE=cartpole-variants` (460k steps, six tasks).
SUITE   ?= cartpole-mirrored
run: install
	$(PY) -m nb2_agents.cli curriculum $(SUITE) --retention nb2 --seeds 0

test: install
	$(PYTEST) -m "not slow"

test-all: install
	$(PYTEST)

lint: install
	$(PY) -m ruff check nb2_agents tests benchmarks
	$(PY) -m ruff format --check nb2_agents tests benchmarks

type: install
	$(PY) -m mypy

bench: install
	$(PY) -m benchmarks

# Rebuild the whole policy zoo (policies/zoo/): the SB3 teachers, then the NB2 students distilled from them.
zoo: install
	$(PY) -m nb2_agents.cli zoo build

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
