# PixMIM Bench. Two commands do all the set-up on a fresh machine:
#   make run    create .venv, then run the main job (the embedded default DAG)
#   make test   create .venv, then run the test suite (fast + slow end-to-end tests)
#   make lint   snakemake --lint, snakefmt --check, ruff check, lint-imports (CI runs it first)
#   make rehearse  the dress rehearsal of config/paper.yaml on CPU (README "Dress rehearsal")
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The workflow profile: profiles/default is what a bare `snakemake` uses (e.g. PROFILE=profiles/ci)
PROFILE ?= profiles/default
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist): the suite's slow part is single-threaded start-up
# and subprocesses, so 2 workers on the 2 cores of CI take less time than one (README).
# Whole modules go to a worker (loadfile: a module's fixtures are built once), the longest
# modules first (tests/conftest.py LONGEST_FIRST), so the workers end together; without
# --no-loadscope-reorder, pytest-xdist would order the modules by their number of tests.
TEST_WORKERS ?= 2
TEST_DIST ?= loadfile --no-loadscope-reorder
# What ruff checks (its settings: pyproject.toml [tool.ruff])
RUFF_PATHS ?= pixmim tests benchmarks

# `make env`'s pip: the lock is complete (--no-deps); byte-compiled once, in parallel, below.
PIP_FLAGS := --quiet --disable-pip-version-check --no-deps --no-compile
# The lock's half for the first of the two pip processes (`make env`): the large binary
# wheels and the packages from a to c.
LOCK_A := ^(nvidia|torch|triton|[a-c])

.PHONY: env run test test-fast lint dry-run ui lock mmcv-full clean rehearse rehearsal-data

env: $(STAMP)

# torch/torchvision are pinned (2.14.1 / 0.29.1): pip takes them from the local wheel store.
$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# Two pip processes on two halves of the lock (pip is CPU-bound here: unpacking ~7 GB, and
	@# ~0.4 s a package reading the index): 83 s instead of 125 s on 2 cores. The halves
	@# share no top-level folder (nvidia*, cuda* in one; mlflow*, opentelemetry*, google-auth
	@# with protobuf in the other), so no file is written by both.
	grep -E '$(LOCK_A)' requirements.lock > $(VENV)/lock-a.txt
	grep -vE '$(LOCK_A)' requirements.lock > $(VENV)/lock-b.txt
	$(BIN)/python -m pip install $(PIP_FLAGS) -r $(VENV)/lock-a.txt & a=$$!; \
	  $(BIN)/python -m pip install $(PIP_FLAGS) -r $(VENV)/lock-b.txt; b=$$?; \
	  wait $$a && test $$b -eq 0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@# Byte-compile the environment once, in parallel. Without .pyc files
	@# (pip --no-compile above, serial otherwise) every job recompiles what it imports: with
	@# PYTHONDONTWRITEBYTECODE set, as on our CI machines, that is ~9 s of each job's start-up
	@# and ~4 of the 20-odd minutes of `make run`. A file that does not compile (a package's
	@# Python-2 example, say) only stays uncompiled, hence the `|| true`. The packages' own test
	@# suites (a test/ or tests/ folder below site-packages: 4,228 of the 22,334 modules, 60 of
	@# the 305 MB of source; importing every pixmim module, 7,377 modules in all, reads none of
	@# them) stay uncompiled (`compileall -f` of the same env, 3 alternating pairs on 2 cores:
	@# medians 47 s without them, 54 s with; ratio 0.77, 95% interval 0.54-1.11). The pattern
	@# starts at site-packages, so a clone inside a folder named tests/ still compiles all.
	$(BIN)/python -m compileall -q -j 0 -x 'site-packages/(.+/)?tests?/' "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" pixmim > /dev/null || true
	@# yapf (imported by mmengine) caches its grammar as a pickle in ~/.cache/YAPF and rewrites
	@# it, in place, whenever the installed grammar file is newer: the first two processes of a
	@# fresh env (pytest's workers, two dense jobs) race on that write ("EOFError: Ran out of
	@# input" in the one that reads it half-written). Writing it once here, alone, avoids it.
	$(BIN)/python -c "import yapf" > /dev/null
	touch $@

run: env
	$(BIN)/snakemake --workflow-profile $(PROFILE)
	@echo; cat results/tables/table2.md
	@echo "MLflow UI: make ui   (then open http://127.0.0.1:5000)"

test: env
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist $(TEST_DIST) $(PYTEST_ARGS)

test-fast: env
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist $(TEST_DIST) -m "not slow" $(PYTEST_ARGS)

dry-run: env
	$(BIN)/snakemake -n --workflow-profile $(PROFILE)

# The dress rehearsal: fixture data in the real layouts, then every job kind of
# config/paper.yaml for one optimizer step through the same rules (config/rehearsal.yaml),
# every table and figure, then the resource table (benchmarks/results/rehearsal_resources).
REHEARSAL := results/rehearsal
REHEARSAL_DATA := $(REHEARSAL)/fixtures
rehearsal-data: env
	$(BIN)/python -m pixmim data fixtures --out $(REHEARSAL_DATA)

# Extra snakemake arguments, before --configfile (CI: --config rehearsal_dense_once=True, .ci/run).
REHEARSE_ARGS ?=
rehearse: env rehearsal-data
	$(BIN)/snakemake --workflow-profile profiles/ci $(REHEARSE_ARGS) --configfile config/paper.yaml config/rehearsal.yaml
	$(BIN)/python -m pixmim rehearsal resources --out $(REHEARSAL)/rehearsal_resources
	@echo; cat $(REHEARSAL)/rehearsal_resources.md

# All four checks run; the target fails if any of them found something. lint-imports checks
# the package's layers (pyproject.toml [tool.importlinter]); --no-cache: it writes nothing.
lint: env
	@status=0; \
	echo "== snakemake --lint"; $(BIN)/snakemake --lint || status=1; \
	echo "== snakefmt --check ."; $(BIN)/snakefmt --check . || status=1; \
	echo "== ruff check $(RUFF_PATHS)"; $(BIN)/ruff check $(RUFF_PATHS) || status=1; \
	echo "== lint-imports"; $(BIN)/lint-imports --no-cache || status=1; \
	exit $$status

ui: env
	@id=$$($(BIN)/python -c "import json; print(json.load(open('results/mlflow/store.json'))['experiment_id'])" 2>/dev/null || echo "<id>"); \
	echo "MLflow UI, experiment pixmim-bench on its runs: http://127.0.0.1:5000/#/experiments/$$id?workflowType=machine_learning"; \
	echo "Compare a baseline with its PixMIM variant over every seed: tags.compare = 'mae_vit_cpu_patch8_64_25e/pretrain'"; \
	echo "(the tables: tags.kind = 'table'; columns and grouping: README, Comparing runs in MLflow)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///results/mlflow/mlflow.db

# Optional: compile mmcv 2.1.0's ops (~25 CPU-minutes) in place of the torchvision stand-in.
mmcv-full: env
	VENV=$(VENV) bash envs/build_mmcv.sh

# Re-resolve requirements.txt into requirements.lock in a throw-away venv.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -r requirements.txt
	.venv-lock/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	(echo "# Generated by 'make lock' from requirements.txt (pip freeze of a fresh .venv). Do not edit."; \
	 echo "# Installed with --no-deps: the set is complete (imagecorruptions-imaug would otherwise pull"; \
	 echo "# the GUI build of OpenCV; opencv-python-headless provides cv2)."; \
	 .venv-lock/bin/python -m pip freeze --all --exclude pip | sort -f) > requirements.lock
	rm -rf .venv-lock

clean:
	rm -rf results .snakemake
