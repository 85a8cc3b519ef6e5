#!/usr/bin/env bash
# Creates benchmarks/recbole/.venv (git-ignored) with RecBole 1.2.1 on a CPU build of torch 2.13.0.
# Separate from recshrink's own .venv on purpose: recshrink must never depend on RecBole.
#   bash benchmarks/recbole/setup.sh          (from anywhere; VENV=/other/path to put it elsewhere)
# Step 4 also installs recshrink itself (editable, --no-deps) and its dependencies at versions that
# keep RecBole's numpy 1.26.4 / pandas 2.2.3, for black-box RecBole teachers; WITH_RECSHRINK=0 skips it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$HERE/.venv}"
PY="${PYTHON:-python3}"
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
# 1. torch alone FIRST, so pip takes the local CPU wheel (2.13.0+cpu); asked for later, as a
#    dependency, it would pull a multi-GB CUDA build.
"$PIP" install 'torch==2.13.0'
# 2. RecBole and the rest, pinned (torch==2.13.0 in the file is then already satisfied).
"$PIP" install -r "$HERE/requirements.txt"
"$PIP" check
# 3. RecBole's entry points must import (ray, tensorboard and pkg_resources are needed for that).
"$VENV/bin/python" -W ignore -c "import recbole, torch, numpy, pandas; import recbole.quick_start
from recbole.model.sequential_recommender import SASRec, GRU4Rec
print('recbole', recbole.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__,
      'pandas', pandas.__version__)"
# 4. recshrink in the same venv (its deps pinned to numpy-1.26-compatible versions, then the package
#    without deps so pip never re-resolves RecBole's pins)
if [ "${WITH_RECSHRINK:-1}" = 1 ]; then
    "$PIP" install -r "$HERE/requirements-recshrink.txt"
    "$PIP" install --no-deps -e "$HERE/../.."
    "$PIP" check
    "$VENV/bin/python" -W ignore -c "import recshrink, numpy, onnxruntime
print('recshrink', recshrink.__version__, 'numpy', numpy.__version__, 'onnxruntime',
      onnxruntime.__version__)"
fi
