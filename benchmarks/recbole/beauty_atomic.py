"""Convert the S3-Rec Beauty file (``user item item ...`` per line, in time order) to a RecBole
atomic ``.inter`` file.

Plain Python (no RecBole, no numpy): runs in either venv.

    python benchmarks/recbole/beauty_atomic.py                       # all 22,363 users
    python benchmarks/recbole/beauty_atomic.py --users 300 --name beauty300   # tiny smoke set
    python benchmarks/recbole/beauty_atomic.py --src ../shared/data/ml-100k/ml-100k.inter \\
        --users 150 --name ml150                                             # tiny, denser

Writes ``<out>/<name>/<name>.inter`` (default ``benchmarks/recbole/out/data/beauty/beauty.inter``):

    user_id:token<TAB>item_id:token<TAB>timestamp:float

``timestamp`` is a global counter (0, 1, 2, ... over the whole file), so each user's order is the
file order and no two interactions tie, also after RecBole min-max normalises the field to float32
(spacing 1/(n-1) ~ 5e-6 for Beauty's 198,502 rows, float32 resolution near 1.0 is 6e-8; checked
below). Rows are written in file order, so RecBole's token -> index map (order of first appearance)
and recshrink's RecBole loader (same rule) agree with the S3-Rec file's own order of first
appearance. Writing is refused outside ``benchmarks/recbole/out/`` (git-ignored) unless
``--allow-anywhere``.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "beauty" / "Beauty.txt"


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def convert(src: Path, dest: Path, users: int | None = None) -> dict:
    """Write ``dest`` from ``src``; returns counts."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    n_users = n_rows = 0
    items: set[str] = set()
    lines = []
    with src.open() as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if users is not None and n_users >= users:
                break
            u, seq = parts[0], parts[1:]
            n_users += 1
            for it in seq:
                lines.append(f"{u}\t{it}\t{n_rows}\n")
                items.add(it)
                n_rows += 1
    with dest.open("w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(lines)
    return {"users": n_users, "items": len(items), "interactions": n_rows,
            "float32_normalised_ties": float32_ties(n_rows), "path": str(dest)}


def float32_ties(n_rows: int) -> int:
    """Adjacent counter values that RecBole's min-max normalisation to float32 would merge."""
    span = max(n_rows - 1, 1)
    prev, ties = None, 0
    for t in range(n_rows):
        v = _f32(t / span)
        ties += v == prev
        prev = v
    return ties


def convert_inter(src: Path, dest: Path, users: int | None = None) -> dict:
    """A RecBole ``.inter`` (e.g. ML-100K's) -> the same layout as :func:`convert`: the first
    ``users`` users in order of first appearance, each user's rows sorted by (timestamp, file
    order), written user by user with a global counter as the timestamp (no ties)."""
    with src.open() as f:
        header = f.readline().rstrip("\n").split("\t")
        names = [h.split(":")[0] for h in header]
        ui, ii, ti = names.index("user_id"), names.index("item_id"), names.index("timestamp")
        per_user: dict[str, list[tuple[float, int, str]]] = {}
        for row, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < len(names):
                continue
            u = parts[ui]
            if u not in per_user and users is not None and len(per_user) >= users:
                continue
            per_user.setdefault(u, []).append((float(parts[ti]), row, parts[ii]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    n, items = 0, set()
    with dest.open("w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, rows in per_user.items():
            for _, _, it in sorted(rows):
                f.write(f"{u}\t{it}\t{n}\n")
                items.add(it)
                n += 1
    return {"users": len(per_user), "items": len(items), "interactions": n,
            "float32_normalised_ties": float32_ties(n), "path": str(dest)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC,
                    help="S3-Rec Beauty.txt, or a RecBole .inter (e.g. ML-100K's: users and "
                         "their time order kept, timestamps replaced by the counter)")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "data",
                    help="folder for <name>/<name>.inter (RecBole's data_path)")
    ap.add_argument("--name", default="beauty", help="data set name (RecBole's `dataset`)")
    ap.add_argument("--users", type=int, default=None, help="keep only the first N users")
    ap.add_argument("--allow-anywhere", action="store_true",
                    help="allow an --out outside benchmarks/recbole/out/")
    args = ap.parse_args()
    out = args.out.resolve()
    allowed = (HERE / "out").resolve()
    if not args.allow_anywhere and not (out == allowed or allowed in out.parents):
        sys.exit(f"refusing to write to {out}: use a folder under {allowed} (git-ignored) "
                 "or --allow-anywhere")
    src = args.src.resolve()
    fn = convert_inter if src.suffix == ".inter" else convert
    info = fn(src, out / args.name / f"{args.name}.inter", args.users)
    print(info)


if __name__ == "__main__":
    main()
