# semcat_kit: the two README commands (and the benchmarks, and the README's results table). Each sets itself up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch/torchvision known to import together (see README); pip takes them from the local mirror here.
TORCH_PINS := "torch>=2.1,<=2.14.1" "torchvision>=0.16,<=0.29.1"

.PHONY: demo lab test bench results venv clean

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 (or python3) on PATH, or run make PYTHON=/path/to/python"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[all,test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	HF_HUB_OFFLINE=1 $(PY) scripts/run_notebooks.py --out reports

# JupyterLab on notebooks/ with the project's venv; its kernel is also registered as "semcat_kit"
# (inside the venv: --sys-prefix) so it can be picked by name. LAB_ARGS passes options, e.g.
# make lab LAB_ARGS="--no-browser --port 8899"
LAB_ARGS ?=
lab: venv
	$(PY) -m ipykernel install --sys-prefix --name semcat_kit --display-name "Python (semcat_kit)" >/dev/null
	HF_HUB_OFFLINE=1 $(PY) -m jupyterlab --ServerApp.root_dir=notebooks $(LAB_ARGS)

test: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

# docs/results.md and the README's tables: the bundled tutorial, then the Amazon UK toys catalog (text only,
# unlabelled rows) and the full Myntra catalog (44k products with images: ~20 min to encode on 2 cores) from
# the shared data folder (SHARED_DATA=...), each with its measured time
SHARED_DATA ?= ../shared/data
TOYS_OPTIONS := {"id": "uniq_id", "title": "product_name", "path_col": "amazon_category_and_sub_category"}
results: venv
	HF_HUB_OFFLINE=1 $(PY) scripts/make_results.py
	HF_HUB_OFFLINE=1 $(PY) scripts/make_results.py --name toys --catalog $(SHARED_DATA)/amazon-uk-toys/products.csv \
		--catalog-options '$(TOYS_OPTIONS)' --image-encoder none --work-dir work/toys
	HF_HUB_OFFLINE=1 $(PY) scripts/make_results.py --name myntra-full --catalog $(SHARED_DATA)/myntra-fashion \
		--work-dir work/myntra

bench: venv
	HF_HUB_OFFLINE=1 $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) reports
