# minivlm: `make demo` runs the model, `make test` runs the tests. Both create .venv when it is missing.
# TORCH pins the build installed first here (a CPU wheel); set TORCH= to keep whatever torch you have.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minivlm-installed

FIXTURE := tests/fixtures/jvlm-tiny

.PHONY: demo test notebooks weights clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q "$(TORCH)")
	$(PY) -m pip install -q -e ".[test,notebooks]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m minivlm.generate --model $(FIXTURE) --image $(FIXTURE)/images/rgb_378x378.png \
		--prompt "Describe this." --max-new-tokens 16

test: $(STAMP)
	$(PY) -m pytest -q

# Re-execute notebooks/*.ipynb top to bottom and store them with their outputs (tests/test_notebooks.py runs them too).
notebooks: $(STAMP)
	$(PY) notebooks/run_notebooks.py --save

# The real model: about 5 GB (bfloat16) from the Hugging Face Hub into weights/jina-vlm.
weights: $(STAMP)
	$(PY) -m pip install -q "huggingface_hub>=0.23"
	$(PY) -c "from huggingface_hub import snapshot_download as d; d('jinaai/jina-vlm', local_dir='weights/jina-vlm', allow_patterns=['*.json', '*.safetensors', '*.jinja', '*.txt'])"

clean:
	rm -rf $(VENV) .pytest_cache
