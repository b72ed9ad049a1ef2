# Two commands for a fresh machine:
#   make demo   install everything, generate a video with the bundled model
#   make test   install everything, run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= a red circle moving left on a black background

.PHONY: install demo test bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the CPU wheel; everything else is held to it by constraints.txt
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# byte-compiled once here, as a wheel install does: a cold `tessera generate` would otherwise
	# compile the package on every start where Python may not write its cache (0.3-0.5 s)
	$(BIN)/python -m compileall -q tessera
	touch $@

demo: install
	$(BIN)/tessera generate "$(PROMPT)" -o demo.mp4
	@echo "video written to $(CURDIR)/demo.mp4"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/generate.py

lint: install
	$(BIN)/ruff check tessera tests benchmarks

clean:
	rm -rf $(VENV) demo.mp4
