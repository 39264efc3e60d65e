# The two commands the README promises: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench

run: $(VENV)/.installed
	$(BIN)/python app.py

test: $(VENV)/.installed-dev browser
	STUDIO_REQUIRE_BROWSER=1 $(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check studio tests benchmarks app.py

bench: $(VENV)/.installed
	for script in benchmarks/bench_*.py; do echo "# $$script"; $(BIN)/python $$script || exit 1; done

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# Browser tests drive Debian's Chromium through Playwright (Playwright cannot download its own browser offline).
.PHONY: browser
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
