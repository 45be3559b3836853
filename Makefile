# Quick start: `make demo` and `make test`. Both create .venv and install the pinned set.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
DEMO   := out/demo

.PHONY: install test demo bench lock sample clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("cough needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

test: install
	$(BIN)/python -m pytest tests

demo: install
	$(BIN)/cough featurize data/sample/raw --labels data/sample/labels.csv --out $(DEMO)/features
	@echo "demo done: $(DEMO)"

# Re-pin after a deliberate upgrade: install unpinned, run the tests, then `make lock`.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

sample: install
	rm -rf data/sample
	$(BIN)/cough synth --out data/sample --n 60 --seed 7 --max-duration-s 3 --formats mp3,ogg,mp3,flac

clean:
	rm -rf out .pytest_cache
