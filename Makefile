# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: run test install train validate replies-check test-stories pytest browser lint clean

run: train  ## start the bot, the action server and the demo web chat
	@$(PY) -m parley.bot.cli run

test: train validate replies-check test-stories pytest  ## everything CI runs

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
	@$(PY) -m parley.bot.cli train

validate: install
	$(BIN)/rasa data validate --fail-on-warnings

replies-check: install  ## channel limits, placeholders, missing and unused replies
	$(BIN)/python -m parley.bot.cli replies check

test-stories: train
	$(BIN)/rasa test core --e2e --stories data/tests --model models/parley.tar.gz \
	  --fail-on-prediction-errors --out var/results/core

pytest: train browser
	$(BIN)/pytest

browser:  ## Debian's Chromium for the Playwright tests
	@scripts/install-chromium.sh

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf var models .pytest_cache
