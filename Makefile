# The two set-up commands of README: `make run` (the main job on the embedded defaults) and
# `make test` (lint, types, and the whole test suite on real PostgreSQL and Ray).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test lint browser bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(VENV)/.installed-run
	$(BIN)/wfdag run complete-value-lifecycle-v1 --wait

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py --json bench/results/latest.json

# A smoke test of the benchmark (CI): it must run and write valid JSON; no speed is asserted.
bench-quick: $(VENV)/.installed-bench
	$(BIN)/python bench/run.py --quick --json bench/results/quick.json
	$(BIN)/python -c "import json; d = json.load(open('bench/results/quick.json')); \
	  missing = [k for k in ('chain_throughput_vs_dbos', 'chain_latency_p50_vs_dbos', \
	  'chain_throughput_vs_ray_floor', 'fork_join_over_critical_path', \
	  'replay_fold_events_per_s', 'rebuild_vs_scan', 'append_vs_floor', 'append_pool_vs_floor', \
	  'scale_completed', \
	  'scale_peak_rss_mb', 'large_row_vs_log', 'console_execution_open_ms', \
	  'console_list_page_big_vs_small', 'chain_task_stages_throughput_vs_ray_floor', \
	  'parked_10k_runner_rss_growth_mb', 'approve_to_next_stage_p50_ms', 'long_log_resume_ms', \
	  'scale_10k_completed', 'scale_10k_peak_rss_mb', 'scale_10k_peak_rss_sum_mb', \
	  'cli_status_p50_ms', 'chain_async_agents_throughput_vs_dbos') \
	  if k not in d or (d[k] is None and 'dbos' not in k)]; \
	  assert not missing, missing; print('bench JSON ok')"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python tests/module_sizes.py

# The console's browser tests drive Debian's Chromium: installed here when it is missing (as
# root, or with sudo).  Playwright (a Python test dependency) never downloads a browser.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the console's browser tests (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium >/dev/null; }

# The suite takes ~13 minutes here; a hang is cut off at 40 (SIGINT: pytest still prints the
# summary of what failed), well inside CI's 90.
test: lint browser
	timeout --signal=INT --kill-after=60 40m $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
