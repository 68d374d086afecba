# Two entry points on a fresh machine (Python 3.10+, no GPU needed):
#   make demo   set up, then run every task's pipeline on the built-in data (TASK=segment: one task)
#   make test   set up, then run the test suite (what CI runs)
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The CPU wheel here; on a GPU machine use e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"
TORCH ?= torch==2.13.0
OUT   ?= runs
TASK  ?= all

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[train,rtx,cuda,ort-ext,test]'
	touch $@

demo: setup
	$(VENV)/bin/visionrt pipeline $(TASK) --out $(OUT)

test: setup
	$(PY) -m pytest
