# Two commands do all set-up on a fresh machine (Python 3.11+ with venv):
#   make run    build the virtual environment, then run the workflow on the embedded sample
#   make test   build the virtual environment, then run the test suite
# Either leaves the `imgprep` command in .venv/bin (`.venv/bin/imgprep ravel photo.jpg`).
VENV ?= .venv
PYTHON ?= python3
CORES ?= all
BIN := $(VENV)/bin

.PHONY: run test lint bench dryrun-bench clean slurm slurm-stop slurm-plugin slurm-run

# the pinned dependencies, then this package, editable: .venv/bin/imgprep runs scripts/imgprep
$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES) --profile profiles/local

# S3 plugin, boto3 and moto for tests/test_s3.py: beside .venv, not in it (plugins that
# Snakemake finds slow down every call; requirements-aws.txt says more).
.plugins/aws/.installed: requirements-aws.txt requirements-aws-test.txt $(BIN)/.installed
	rm -rf .plugins/aws
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --target .plugins/aws \
		-r requirements-aws-test.txt
	touch $@

# TensorFlow Datasets for tests/test_loaders.py: beside .venv too, without the pyarrow it
# declares (requirements-tfds.txt says why).
.plugins/tfds/.installed: requirements-tfds.txt $(BIN)/.installed
	rm -rf .plugins/tfds
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --target .plugins/tfds \
		-r requirements-tfds.txt
	touch $@

# Hugging Face datasets for tests/test_parquet_format.py: beside .venv as well, with the
# pyarrow it needs (requirements-hf.txt says why pyarrow stays out of .venv).
.plugins/hf/.installed: requirements-hf.txt $(BIN)/.installed
	rm -rf .plugins/hf
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --target .plugins/hf \
		-r requirements-hf.txt
	touch $@

test: $(BIN)/.installed .plugins/aws/.installed .plugins/tfds/.installed .plugins/hf/.installed
	$(BIN)/python -m pytest tests

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --cores 1

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_resize.py
	$(BIN)/python benchmarks/bench_ravel.py
	$(BIN)/python benchmarks/bench_workflow.py
	$(BIN)/python benchmarks/bench_dryrun.py
	$(BIN)/python benchmarks/bench_tarindex.py
	$(BIN)/python benchmarks/bench_download.py
	$(BIN)/python benchmarks/bench_decode_share.py
	$(BIN)/python benchmarks/bench_datasets.py
	$(BIN)/python benchmarks/bench_duplicates.py
	$(BIN)/python benchmarks/bench_dryrun.py --datasets

# SLURM (profiles/slurm/README.md): the executor plugin lives in .plugins/slurm, not .venv.
# `make slurm` installs and starts a single-node cluster on this machine (root or sudo);
# `make slurm-run` runs the sample on it (threads are lowered to the node's CPUs).
slurm-plugin: $(BIN)/.installed
	tools/slurm/install-plugin.sh $(BIN)/python

slurm:
	tools/slurm/start-slurm.sh

slurm-stop:
	tools/slurm/stop-slurm.sh

slurm-run: slurm-plugin
	PYTHONPATH=$(CURDIR)/.plugins/slurm $(BIN)/snakemake --profile profiles/slurm $(SLURM_ARGS)

clean:
	rm -rf results .snakemake
