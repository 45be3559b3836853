# Quick start: `make demo` and `make test`. Both create .venv and install the pinned set.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
DEMO   := out/demo

.PHONY: install test test-fast demo bench lock sample clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("cough needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

test: install
	$(BIN)/ruff check cough jobs tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Pure functions and usage errors only: no Ray, no training, no whole report (tests/conftest.py).
test-fast: install
	$(BIN)/python -m pytest -m fast

# The bundled sample trains the model; tonight's arrivals (a fresh synthetic archive of
# other participants) are scored and reported, as a nightly run would.
demo: install
	$(BIN)/cough featurize data/sample/raw --labels data/sample/labels.csv --out $(DEMO)/features
	$(BIN)/cough train $(DEMO)/features --out $(DEMO)/model --arch pooled --epochs 15 --workers 1 --test-fraction 0.2
	rm -rf $(DEMO)/tonight
	$(BIN)/cough synth --out $(DEMO)/tonight --n 150 --seed 2024 --max-duration-s 4
	$(BIN)/cough score $(DEMO)/tonight/raw --labels $(DEMO)/tonight/labels.csv --model $(DEMO)/model --out $(DEMO)/pred
	$(BIN)/cough report $(DEMO)/pred --out $(DEMO)/report --by site
	@echo "open in a browser: $(CURDIR)/$(DEMO)/report/report.html"

# Re-pin after a deliberate upgrade: install unpinned, run the tests, then `make lock`.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

sample: install
	rm -rf data/sample
	$(BIN)/cough synth --out data/sample --n 60 --seed 7 --max-duration-s 3 --formats mp3,ogg,mp3,flac

clean:
	rm -rf out .pytest_cache
