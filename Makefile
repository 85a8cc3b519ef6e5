# recshrink: two commands on a fresh clone -> `make demo`, `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RECSHRINK_DATA ?= ../shared/data
export RECSHRINK_DATA

.PHONY: demo test bench scale gpu-payload venv clean

venv: $(STAMP)

# Installs once; re-installs only when the dependency files change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recshrink run recipes/quickstart.yaml --out runs/quickstart
	@echo "report: runs/quickstart/report.json"

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Real-data benchmark (slow): the Beauty recipe on CPU (teacher, baselines, students, pruning,
# INT8, ONNX, side-by-side benchmark; stages already done are reused), then its report.md goes
# into docs/benchmarks.md. Data under $(RECSHRINK_DATA).
bench: $(STAMP)
	$(BIN)/recshrink run recipes/beauty.yaml --out runs/beauty
	$(BIN)/python benchmarks/update_docs.py runs/beauty/report.md --name beauty

# Serving cost against catalogue size (issue 19): the exact artifact against the retrieval artifact
# (user encoder + FAISS HNSW index) of the same freshly initialised GRU, 10k / 100k / 1M items, one
# thread; runs/scale/scale_serving.json. The 1M index build takes ~15 min on one core.
scale: $(STAMP)
	$(BIN)/python benchmarks/scale_serving.py --items 10000 100000 1000000 --out runs/scale

# Inputs of the GPU check (docs/benchmarks.md, "Running the GPU check"), from `make bench`'s run:
# its teacher and students with real test histories in gpu_payload/, and the pydantic wheels the
# GPU image lacks (Python 3.12) in .whl/. Both are git-ignored.
WHEELS := pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
gpu-payload: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py prepare --teacher runs/beauty/teacher \
	    --student runs/beauty/students/gru_student --student runs/beauty/students/cnn_student \
	    --data $(RECSHRINK_DATA)/beauty/Beauty.txt
	rm -rf .whl && $(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux2014_x86_64 -d .whl $(WHEELS)
