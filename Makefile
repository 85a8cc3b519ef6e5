# recshrink: two commands on a fresh clone -> `make demo`, `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
RECSHRINK_DATA ?= ../shared/data
export RECSHRINK_DATA

.PHONY: demo test bench venv clean

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

# Real-data benchmark (slow): Beauty teacher and baselines on CPU; data under $(RECSHRINK_DATA).
bench: $(STAMP)
	$(BIN)/recshrink run recipes/beauty.yaml --out runs/beauty
	$(BIN)/recshrink run recipes/ml100k.yaml --out runs/ml100k

clean:
	rm -rf runs
