# Two entry points on a fresh machine (Python 3.10+, no GPU needed):
#   make demo   set up, then run every task's pipeline on the built-in data (TASK=segment: one task)
#   make test        set up, then run the whole test suite (what CI runs)
#   make test-fast   set up, then the tests that neither train nor build (-m "not slow", < 3 min)
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The CPU wheel here; on a GPU machine use e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"
TORCH ?= torch==2.13.0
OUT   ?= runs
TASK  ?= all

.PHONY: setup browser demo zoo test test-fast wrk serving-reference
setup: $(VENV)/.installed

# The page test drives a real headless Chromium (Debian's packages); under `make test` it fails
# where they cannot be installed (no root, no apt); a plain `pytest` skips it with the reason.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium not installed: the page test will be skipped"

# The serving reference figures drive the server with wrk, a C load generator (Debian's package).
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
	  { echo "wrk could not be installed (no root or no apt): install it, then rerun"; exit 1; }

# make serving-reference MODEL=runs/classify-resnet IMAGES=<folder of images> [OUT=runs]
serving-reference: setup wrk
	$(PY) -m visionrt.benchmarks.serving $(MODEL) --images $(IMAGES) --wrk --out $(OUT)/serving

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[train,rtx,cuda,ort-ext,serve,openvino,test]'
	touch $@

demo: setup
	$(VENV)/bin/visionrt pipeline $(TASK) --out $(OUT)

# Every architecture of every task through every stage against its target: $(OUT)/zoo.md (hours on
# 2 cores; not in CI). ONLY=detect/ssd,superres reruns those rows and keeps the others.
zoo: setup
	$(VENV)/bin/visionrt zoo --out $(OUT) $(if $(ONLY),--only $(ONLY))

# The extras `setup` installs are required here: a test that would skip for want of one fails
# (tests/conftest.py: require_or_skip). Only "no GPU" and "no full TensorRT" remain skips.
test: setup browser
	VISIONRT_REQUIRE_EXTRAS=1 $(PY) -m pytest

# pytest exits 5 when nothing was collected: that fails here like any other non-zero exit.
test-fast: setup browser
	VISIONRT_REQUIRE_EXTRAS=1 $(PY) -m pytest -m "not slow"
