# minivlm: `make demo` runs the model, `make test` runs the tests. Both create .venv when it is missing.
# TORCH pins the build installed first here (a CPU wheel); set TORCH= to keep whatever torch you have.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.minivlm-installed

.PHONY: demo chat train-tiny eval-tiny test notebooks lab weights clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH),$(PY) -m pip install -q "$(TORCH)")
	$(PY) -m pip install -q -e ".[test,notebooks,hub]"
	touch $(STAMP)

# The embedded model (minivlm/tiny/minivlm-tiny, 5 MB, trained by `make train-tiny`): runs offline in seconds.
TINY := minivlm/tiny/minivlm-tiny

demo: $(STAMP)
	$(PY) -m minivlm.generate --image $(TINY)/example.png --prompt "What color is the circle?"

# Train the demo model from scratch into its shipped folder, then evaluate it: stage 0 (vision pretraining, standing
# in for SigLIP2's; PyTorch's math attention, faster here for the small ViT) writes the starting checkpoint, the
# paper's two stages run from the tiny recipe (ViT and connector frozen), then the counting recipe trains everything
# on from there (its own folder, whose weights and losses are moved into the shipped one). The trainer leaves a
# resumable checkpoint every 1,500 (counting: 1,000) steps (`--resume $(TINY)/checkpoint-N`, `--resume
# $(TINY)/counting/checkpoint-N` goes on from one after an interruption); they are removed at the end. Fixed seeds:
# the run depends on them alone (README: time, CPU, and what has been rerun so far).
train-tiny: $(STAMP)
	$(PY) -m minivlm.tiny.pretrain --out $(TINY) --steps 3000 --attention math
	$(PY) -m minivlm.train --recipe minivlm/train/recipes/tiny.json --model $(TINY) --out $(TINY)
	$(PY) -m minivlm.train --recipe minivlm/train/recipes/tiny-counting.json --model $(TINY) --out $(TINY)/counting
	mv $(TINY)/counting/model.safetensors $(TINY)/model.safetensors
	mv $(TINY)/counting/losses.csv $(TINY)/counting_losses.csv
	mv $(TINY)/counting/loss_curve.png $(TINY)/counting_loss_curve.png
	rm -rf $(TINY)/counting $(TINY)/checkpoint-*
	$(PY) -m minivlm.tiny.eval --model $(TINY) -n 400 --seed 12345

# Exact-match accuracy of the embedded model on 400 fresh questions, per language and question type, and on
# count questions about scenes with identical shapes.
eval-tiny: $(STAMP)
	$(PY) -m minivlm.tiny.eval --model $(TINY) -n 400 --seed 12345

# A conversation on the terminal with the demo model: /image PATH, then questions; /exit quits.
chat: $(STAMP)
	$(PY) -m minivlm.chat

test: $(STAMP)
	$(PY) -m pytest -q

# Re-execute notebooks/*.ipynb top to bottom and store them with their outputs (tests/test_notebooks.py runs them too).
notebooks: $(STAMP)
	$(PY) notebooks/run_notebooks.py --save

# Open the notebooks in JupyterLab (Shift+Enter runs one cell; Run > Run All Cells runs them all).
lab: $(STAMP)
	$(PY) -m jupyterlab notebooks

# The real model: about 5 GB (bfloat16) from the Hugging Face Hub into the Hugging Face cache (HF_HOME), every
# file the project uses (the remote code too, for `bench --official` and notebook 05), linked as weights/jina-vlm.
weights: $(STAMP)
	$(PY) -m minivlm.hub jinaai/jina-vlm --link weights/jina-vlm

clean:
	rm -rf $(VENV) .pytest_cache
