"""Put a recipe run's report.md into docs/benchmarks.md, between generated-block markers.

    python benchmarks/update_docs.py runs/beauty/report.md [--docs docs/benchmarks.md] [--name beauty]

The block ``<!-- bench:NAME:begin --> ... <!-- bench:NAME:end -->`` is replaced (or appended
at the end of the file the first time), stamped with the date; the file is written atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path


def update(report_md: Path, docs: Path, name: str) -> None:
    body = report_md.read_text().strip()
    body = body.replace("\n# ", "\n#### ").replace("\n## ", "\n#### ")
    if body.startswith("# "):
        body = "#### " + body[2:]
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    block = (f"{begin}\n### `make bench` ({name}), generated {dt.date.today().isoformat()} from "
             f"`{report_md}`\n\n{body}\n{end}")
    text = docs.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = docs.with_name(docs.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, docs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    ap.add_argument("--name", default="beauty")
    a = ap.parse_args()
    if not a.report.is_file():
        raise SystemExit(f"error: {a.report}: no such report (run the recipe first)")
    update(a.report, a.docs, a.name)
    print(f"updated {a.docs} from {a.report}")


if __name__ == "__main__":
    main()
