"""recshrink's CLI for the RecBole venv (numpy 1.26), with a workaround for a recshrink import
failure there; same arguments as ``recshrink``:

    benchmarks/recbole/.venv/bin/python benchmarks/recbole/recshrink_cli.py \
        evaluate --model X.pth --data D.inter

On numpy 1.26, ``import recshrink`` fails in src/recshrink/teachers/checkpoint.py
(``_safe_globals``: ``np._core.multiarray`` -> AttributeError, since numpy 1.26 has a stub
``numpy._core`` package whose ``multiarray`` submodule ``import numpy`` does not load).
Importing that stub submodule first makes the attribute exist (it re-exports
``numpy.core.multiarray``). Once src is fixed, use the venv's ``recshrink`` entry point instead.
"""

import numpy._core.multiarray  # noqa: F401  (must come before recshrink)

from recshrink.cli import main

if __name__ == "__main__":
    main(prog_name="recshrink")
