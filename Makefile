# The README's commands. Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.easel-installed
ARGS ?=

.PHONY: setup bench test lint format browser clean chaos soak reliability reliability-report

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## The main job: `easel bench` on the embedded default config (tiny models, simulated providers).
bench: setup
	$(VENV)/bin/easel bench $(ARGS)

## Lint, then the default test run (excludes `slow` and `chaos`; `gpu` tests skip without CUDA).
test: setup browser lint
	@$(PY) -m pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing loudly" >&2; fi; \
	exit $$rc

## Reliability (docs/reliability.md is generated from the records these write).
RELIABILITY_DIR ?= benchmarks/results/reliability

## The chaos suite (`-m chaos`): faults under load from the real generator, one record each;
## its wall time goes to $(RELIABILITY_DIR)/chaos_run.json.
chaos: setup
	@mkdir -p $(RELIABILITY_DIR); start=$$(date +%s); \
	EASEL_RELIABILITY_DIR=$(RELIABILITY_DIR) $(PY) -m pytest -m chaos tests/chaos $(ARGS); rc=$$?; \
	printf '{"wall_s": %d, "cpus": %d, "exit": %d, "time": "%s"}\n' $$(( $$(date +%s) - start )) \
		$$(nproc) $$rc $$(date -u +%Y-%m-%dT%H:%M:%SZ) > $(RELIABILITY_DIR)/chaos_run.json; \
	$(PY) benchmarks/reliability_report.py; exit $$rc

## The soak (`-m slow`): 30 min at low rate, a random replica killed every minute.
soak: setup
	EASEL_RELIABILITY_DIR=$(RELIABILITY_DIR) $(PY) -m pytest -m slow tests/chaos/test_soak.py $(ARGS)
	$(PY) benchmarks/reliability_report.py

## The hostile-input suite and the short chaos scenario with their records on, then the page.
reliability: setup
	EASEL_RELIABILITY_DIR=$(RELIABILITY_DIR) $(PY) -m pytest tests/serve_apps/gateway/test_hostile.py tests/chaos/test_vendor_faults.py $(ARGS)
	$(PY) benchmarks/reliability_report.py

reliability-report: setup
	$(PY) benchmarks/reliability_report.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Browser tests drive Debian's Chromium through Playwright (never a browser download).
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium missing and not root: browser tests will skip"; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
