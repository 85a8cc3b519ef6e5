"""Check recshrink's black-box RecBole teacher paths against RecBole itself, on a run of
train_foreign.py. Runs in the RecBole venv with recshrink installed there (README.md):

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 benchmarks/recbole/.venv/bin/python \\
        benchmarks/recbole/check_blackbox.py benchmarks/recbole/out/foreign/BERT4Rec-beauty300

Reads the run folder (``results.json``, ``<Model>_ref.npz``, the ``.pth``, ``<Model>.onnx`` and
its ``.items.json``) and the ``.inter`` file RecBole trained on, and checks:

  ids   recshrink.load_data(.inter) numbers items and users as RecBole does (token order = order
        of first appearance, [PAD] = 0 on RecBole's side), and its leave-one-out test histories
        and targets equal the rows RecBole's test loader fed (fixture rows)
  (a)   teacher_from_recbole_code(pth, N) scores (recshrink's left-padded histories) vs RecBole's
        own full_sort_predict on the same rows (right-padded), max |diff| and top-10 agreement;
        the same for teacher_from_onnx / open_teacher(onnx) with its sidecar
  (b)   recshrink.evaluate(onnx | pth, data, mask_history=False) NDCG@10 / HR@10 vs RecBole's own
        test result of the checkpoint (also ties="expected", and mask_history=True for reference);
        plus a RecBole-style top-k count (torch.topk, no history masking) on the ONNX scores
  (c)   the CLI: ``recshrink evaluate --model <pth> --data <inter> --no-mask-history`` (and the
        .onnx)
  (d)   the sidecar at work: the same interactions with the users in reverse order (so
        recshrink's item numbering differs from RecBole's): the ONNX teacher and the .pth, each
        translated by its id sidecar (train_foreign.py writes both), must give the same metrics

Writes ``<run>/check_blackbox.json``. Nothing is written elsewhere except the reversed
``.inter`` under ``benchmarks/recbole/out/data/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent


def left_pad(seq: np.ndarray, lens: np.ndarray) -> torch.Tensor:
    """RecBole's right-padded rows -> recshrink's left-padded histories."""
    out = np.zeros_like(seq)
    for r, n in enumerate(lens):
        out[r, seq.shape[1] - n:] = seq[r, :n]
    return torch.from_numpy(out)


def compare(got: np.ndarray, ref: np.ndarray) -> dict:
    """Scores [B, N + 1] (column 0 ignored) vs RecBole's raw full_sort_predict [B, N + 1]."""
    g, r = got[:, 1:], ref[:, 1:]
    top = sum(np.array_equal(np.argsort(-g[i], kind="stable")[:10],
                             np.argsort(-r[i], kind="stable")[:10]) for i in range(len(g)))
    return {"rows": int(len(g)), "max_abs_diff": float(np.abs(g - r).max()), "same_top10": int(top)}


def recbole_style(score_fn, es, batch: int = 512) -> dict:
    """NDCG@10 / HR@10 as RecBole computes them: torch.topk over every item but [PAD], no history
    masking, one target per row."""
    ndcg = hit = 0.0
    for s in range(0, len(es), batch):
        seq = torch.from_numpy(es.histories[s:s + batch])
        sc = score_fn(seq).float()  # column 0 ([PAD]) is already -inf
        top = torch.topk(sc, 10, dim=1).indices.numpy()
        for row, t in zip(top, es.targets[s:s + batch]):
            pos = np.nonzero(row == t)[0]
            if len(pos):
                hit += 1
                ndcg += 1 / np.log2(pos[0] + 2)
    return {"ndcg@10": ndcg / len(es), "hr@10": hit / len(es)}


def pick(m: dict) -> dict:
    return {k: round(float(m[k]), 6) for k in ("ndcg@10", "hr@10") if k in m} | (
        {"count": m["count"]} if "count" in m else {})


def run_cli(args: list[str]) -> dict:
    exe = Path(sys.executable).parent / "recshrink"
    t0 = time.perf_counter()
    p = subprocess.run([str(exe), *args], capture_output=True, text=True)
    tail = (p.stdout + p.stderr).strip().splitlines()
    return {"rc": p.returncode, "s": round(time.perf_counter() - t0, 1),
            "output": tail[-14:] if p.returncode == 0 else tail[-3:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run", type=Path, help="a train_foreign.py run folder")
    ap.add_argument("--inter", type=Path, default=None,
                    help="the .inter RecBole trained on (default: from results.json)")
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import recshrink
    from recshrink.teachers import foreign_item_ids, open_teacher
    from recshrink.teachers.onnx import teacher_from_onnx
    from recshrink.teachers.recbole_code import teacher_from_recbole_code

    run = args.run.resolve()
    res = json.loads((run / "results.json").read_text())
    name = res["model"]
    inter = args.inter or Path(res["dataset_dir"]) / f"{res['dataset']}.inter"
    pth = Path(res["checkpoint"])
    onnx_path = run / f"{name}.onnx"
    fix = np.load(run / f"{name}_ref.npz")
    seq, lens, ref = fix["item_seq"], fix["item_seq_len"], fix["scores"]
    out: dict = {"run": str(run), "inter": str(inter), "model": name,
                 "recbole_test_result": res["test_result"]}

    # ids and split
    t0 = time.perf_counter()
    data = recshrink.load_data(inter)
    out["load_data_s"] = round(time.perf_counter() - t0, 2)
    rb_items = [str(x) for x in fix["item_id_tokens"]]
    rb_users = [str(x) for x in fix["user_id_tokens"]]
    split = data.split(50)
    es = split.test
    u_index = {u: i for i, u in enumerate(data.user_ids)}
    row_of_user = {int(u): r for r, u in enumerate(es.users)}
    hist_ok = tgt_ok = 0
    for k in range(len(seq)):
        r = row_of_user[u_index[rb_users[fix["user_id"][k]]]]
        h = es.histories[r]
        hist_ok += np.array_equal(h[h > 0], seq[k, :lens[k]])
        tgt_ok += int(es.targets[r]) == int(fix["target_item"][k])
    has_onnx = onnx_path.is_file()
    sidecar = foreign_item_ids(onnx_path) if has_onnx else None
    out["ids"] = {
        "recshrink_num_items": data.num_items, "recbole_n_items_incl_pad": len(rb_items),
        "item_tokens_equal_recbole_order": list(data.item_ids) == rb_items[1:],
        "pad_token": rb_items[0],
        "user_tokens_equal_recbole_order": list(data.user_ids) == rb_users[1:],
        "sidecar_equals_data_item_ids": (sidecar == list(data.item_ids)) if has_onnx else None,
        "test_users": len(es),
        "fixture_rows_with_same_test_history": f"{hist_ok}/{len(seq)}",
        "fixture_rows_with_same_test_target": f"{tgt_ok}/{len(seq)}",
    }
    print("ids:", json.dumps(out["ids"]), flush=True)

    # (a) scores
    hist = left_pad(seq, lens)
    a = {}
    t0 = time.perf_counter()
    teacher = teacher_from_recbole_code(pth, data.num_items)
    a["build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    a["recbole_code_pth"] = compare(teacher.scores(hist).numpy(), ref)
    a["recbole_code_pth"]["score_s"] = round(time.perf_counter() - t0, 2)
    a["recbole_code_pth"]["arch"] = teacher.arch
    opened, _ = open_teacher(pth, data.num_items, data.item_ids)
    a["open_teacher_pth"] = compare(opened.scores(hist).numpy(), ref)
    if has_onnx:
        onnx_t = teacher_from_onnx(onnx_path)
        a["teacher_from_onnx"] = compare(onnx_t.scores(hist).numpy(), ref)
        onnx_o, _ = open_teacher(onnx_path, data.num_items, data.item_ids)
        a["open_teacher_onnx_with_sidecar"] = compare(onnx_o.scores(hist).numpy(), ref)
    # right-padded histories through recshrink too (a history shorter than the window)
    short = left_pad(seq, np.minimum(lens, 3))[:, -3:]
    a["short_window_no_error"] = tuple(teacher.scores(short).shape)
    out["a_scores"] = a
    print("(a):", json.dumps(a), flush=True)

    # (b) metrics
    b = {}
    models = {"onnx": onnx_path, "pth": pth} if has_onnx else {"pth": pth}
    for label, model in models.items():
        t0 = time.perf_counter()
        b[f"{label}_no_mask"] = pick(recshrink.evaluate(model, data, mask_history=False))
        b[f"{label}_no_mask"]["s"] = round(time.perf_counter() - t0, 2)
        b[f"{label}_no_mask_ties_expected"] = pick(
            recshrink.evaluate(model, data, mask_history=False, ties="expected"))
        b[f"{label}_mask_history_default"] = pick(recshrink.evaluate(model, data))
    if has_onnx:
        b["recbole_style_topk_on_onnx_scores"] = recbole_style(onnx_t.scores, es)
    b["recbole_style_topk_on_pth_scores"] = recbole_style(teacher.scores, es)
    out["b_metrics"] = b
    print("(b):", json.dumps(b), "recbole:", res["test_result"], flush=True)

    # (c) CLI
    if not args.skip_cli:
        cli_models = {"pth": pth, "onnx": onnx_path} if has_onnx else {"pth": pth}
        out["c_cli"] = {label: run_cli(["evaluate", "--model", str(m), "--data", str(inter),
                                        "--no-mask-history"])
                        for label, m in cli_models.items()}
        print("(c):", json.dumps(out["c_cli"], indent=1), flush=True)

    # (d) sidecar remapping: users in reverse order -> another item numbering
    lines = inter.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    by_user: dict[str, list[str]] = {}
    for line in rows:
        by_user.setdefault(line.split("\t", 1)[0], []).append(line)
    rev = HERE / "out" / "data" / f"{inter.stem}_reversed" / f"{inter.stem}_reversed.inter"
    rev.parent.mkdir(parents=True, exist_ok=True)
    rev.write_text("\n".join([header] + [x for u in reversed(by_user) for x in by_user[u]]) + "\n")
    data_r = recshrink.load_data(rev)
    d = {"item_order_differs": list(data_r.item_ids) != list(data.item_ids),
         "pth_no_mask": pick(recshrink.evaluate(pth, data_r, mask_history=False))}
    if has_onnx:
        d["onnx_no_mask"] = pick(recshrink.evaluate(onnx_path, data_r, mask_history=False))
    out["d_reversed_users"] = d
    print("(d):", json.dumps(d), flush=True)

    (run / "check_blackbox.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {run / 'check_blackbox.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
