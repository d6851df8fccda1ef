# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON  ?= python3
VENV    ?= .venv
CONFIG  ?= gateway.yaml
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
PIP     := $(VENV)/bin/pip --disable-pip-version-check -q

.PHONY: run test test-fast test-slow bench check clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The core and every plugin under plugins/, editable, so a change needs no reinstall.
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml $(wildcard plugins/*/pyproject.toml)
	$(PIP) install -e '.[fast]' $(foreach p,$(PLUGINS),-e $(p))
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP) install -e '.[fast,test]' $(foreach p,$(PLUGINS),-e '$(p:/=)[test]')
	touch $@

# The real Claude Code CLI for the end-to-end agent test (the platform package carries the binary).
CLAUDE_DIR := .cache/claude-code
$(CLAUDE_DIR)/.installed:
	@if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --prefix $(CLAUDE_DIR) @anthropic-ai/claude-code && touch $@; \
	else echo "npm not found: the Claude Code end-to-end test will be skipped"; fi

run: $(VENV)/.installed
	$(VENV)/bin/hookway serve --config $(CONFIG)

check: $(VENV)/.installed
	$(VENV)/bin/hookway check --config $(CONFIG)

# The whole suite, end-to-end tests included. pytest's own exit code is kept (5 = no tests = failure).
test: $(VENV)/.test-installed $(CLAUDE_DIR)/.installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.test-installed
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.test-installed $(CLAUDE_DIR)/.installed
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

# hookway vs a bare aiohttp proxy under wrk (apt's wrk is installed when missing and we are root).
bench: $(VENV)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk; } || true
	$(VENV)/bin/python contrib/bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info core/*.egg-info plugins/*/*.egg-info
