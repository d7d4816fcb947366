# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: run test test-full install train validate parley-check replies-check test-stories pytest browser lint dist clean bench-nlu bench-analytics

run: train  ## start the bot, the action server and the demo web chat
	@$(BIN)/parley run

test: train validate parley-check replies-check test-stories pytest  ## everything CI runs

test-full: train  ## fault tests (tests/faults: kill -9, restarts under load; results/faults/) and every other test marked `faults`
	$(BIN)/pytest -m faults tests

install: $(STAMP)

# Re-install only when pyproject.toml or constraints.txt change.
$(STAMP):
	@py=$$(scripts/find-python.sh) || exit 1; \
	if [ ! -x $(PY) ]; then echo "Creating $(VENV) with $$py"; "$$py" -m venv $(VENV) || exit 1; fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip check
	@rm -f $(VENV)/.installed-*; touch $@

train: install  ## train only when data/ or config changed
	@$(BIN)/parley train

validate: install
	$(BIN)/rasa data validate --fail-on-warnings

parley-check: install  ## the project has what Parley's handoff needs
	$(BIN)/parley check

replies-check: install  ## channel limits, placeholders, missing and unused replies
	$(BIN)/parley replies check

test-stories: train
	$(BIN)/rasa test core --e2e --stories data/tests --model models/parley.tar.gz \
	  --fail-on-prediction-errors --out var/results/core

pytest: train browser
	$(BIN)/pytest

browser:  ## Debian's Chromium for the Playwright tests
	@scripts/install-chromium.sh

DATASET ?= ../shared/datasets/clinc150/data_full.json
BASELINE ?= 1
bench-nlu: install  ## intent accuracy and out-of-scope detection on DATASET (CLINC150's JSON); BASELINE=0 skips Rasa's default
	$(PY) -m bench.nlu $(DATASET) --baseline $(BASELINE)

bench-analytics: install  ## each analytics chart's data call over 100,000 seeded messages, SQLite and PostgreSQL
	$(PY) -m bench.analytics

lint: install
	$(BIN)/ruff check .

dist: install  ## the framework's wheel (no demo) in dist/
	@rm -rf dist build
	$(PY) -m pip wheel --quiet --no-deps -w dist . 2>&1 | grep -v "^WARNING: Location" || true
	@ls dist/*.whl

clean:
	rm -rf var models .pytest_cache dist build
