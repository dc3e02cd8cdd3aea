# semcat_kit: the two README commands (and the benchmarks, and the README's results table). Each sets itself up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch/torchvision known to import together (see README); pip takes them from the local mirror here.
TORCH_PINS := "torch>=2.1,<=2.14.1" "torchvision>=0.16,<=0.29.1"

.PHONY: demo test bench results venv clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 (or python3) on PATH, or run make PYTHON=/path/to/python"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(PY) scripts/run_notebooks.py --out reports

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

results: venv
	HF_HUB_OFFLINE=1 $(PY) scripts/make_results.py

bench: venv
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) reports
