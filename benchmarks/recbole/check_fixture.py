"""Re-run RecBole's SASRec / GRU4Rec forward pass in plain torch from a .pth, WITHOUT RecBole.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recbole/check_fixture.py   # recshrink's venv is fine

The checkpoint is read with inspect_ckpt.walk (no unpickling: globals stay inert markers) and the
tensors are rebuilt from the archive's raw storages; nothing from RecBole is imported. The scores
are compared with out/<Model>_ref.npz (RecBole's own full_sort_predict, eval mode), and the
fixture's NDCG@10 / HR@10 are computed the way RecBole does (column 0 = [PAD] set to -inf, no
history masking, torch.topk). This is a sanity check of the fixtures and of the protocol notes in
README.md, not recshrink's importer.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from inspect_ckpt import Obj, walk  # noqa: E402

DTYPES = {"torch.FloatStorage": np.float32, "torch.LongStorage": np.int64}


def read_checkpoint(path: str):
    z = zipfile.ZipFile(path)
    pkl = next(x for x in z.namelist() if x.endswith("/data.pkl"))
    prefix = pkl[: -len("data.pkl")]
    top, _ = walk(z.read(pkl))

    def tensor(o: Obj) -> torch.Tensor:
        assert o.func == "torch._utils._rebuild_tensor_v2", o.func
        (_, (_, (_, gname), key, _loc, _numel)), offset, size, stride = o.args[:4]
        buf = np.frombuffer(z.read(f"{prefix}data/{key}"), dtype=DTYPES[gname])
        arr = np.lib.stride_tricks.as_strided(
            buf[offset:], shape=size, strides=[s * buf.itemsize for s in stride]
        )
        return torch.from_numpy(arr.copy())

    sd = {k: tensor(v) for k, v in top["state_dict"].items}
    cfg = top["config"].state["final_config_dict"]
    return sd, cfg


def sasrec_scores(sd, cfg, seq, seq_len):
    h, n_layers, n_heads = cfg["hidden_size"], cfg["n_layers"], cfg["n_heads"]
    eps = float(cfg["layer_norm_eps"])
    B, L = seq.shape
    x = sd["item_embedding.weight"][seq] + sd["position_embedding.weight"][:L][None]
    x = F.layer_norm(x, (h,), sd["LayerNorm.weight"], sd["LayerNorm.bias"], eps)
    keep = torch.tril((seq != 0)[:, None, None, :].expand(B, 1, L, L))
    mask = torch.where(keep, 0.0, -10000.0)
    dh = h // n_heads
    for i in range(n_layers):
        p = f"trm_encoder.layer.{i}."
        a = p + "multi_head_attention."

        def lin(t, name):
            return F.linear(t, sd[name + ".weight"], sd[name + ".bias"])

        def heads(t):
            return t.view(B, L, n_heads, dh).transpose(1, 2)

        q, k, v = (heads(lin(x, a + n)) for n in ("query", "key", "value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + mask, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, L, h)
        x = F.layer_norm(lin(ctx, a + "dense") + x, (h,), sd[a + "LayerNorm.weight"],
                         sd[a + "LayerNorm.bias"], eps)
        f = p + "feed_forward."
        y = lin(x, f + "dense_1")
        y = y * 0.5 * (1.0 + torch.erf(y / math.sqrt(2.0)))  # RecBole's gelu (erf form)
        x = F.layer_norm(lin(y, f + "dense_2") + x, (h,), sd[f + "LayerNorm.weight"],
                         sd[f + "LayerNorm.bias"], eps)
    out = x[torch.arange(B), seq_len - 1]
    return out @ sd["item_embedding.weight"].T


def gru4rec_scores(sd, cfg, seq, seq_len):
    emb = sd["item_embedding.weight"]
    gru = torch.nn.GRU(emb.shape[1], cfg["hidden_size"], num_layers=cfg["num_layers"], bias=False,
                       batch_first=True)
    gru.load_state_dict({k[len("gru_layers."):]: v for k, v in sd.items()
                         if k.startswith("gru_layers.")})
    out, _ = gru(emb[seq])
    out = F.linear(out, sd["dense.weight"], sd["dense.bias"])
    return out[torch.arange(len(seq)), seq_len - 1] @ emb.T


def recbole_metrics(scores: torch.Tensor, target: torch.Tensor, k: int = 10):
    s = scores.clone()
    s[:, 0] = -np.inf
    top = torch.topk(s, k, dim=-1).indices
    hit = top == target[:, None]
    rank = hit.float().argmax(1)
    ndcg = torch.where(hit.any(1), 1.0 / torch.log2(rank.float() + 2.0), torch.tensor(0.0))
    return float(ndcg.mean()), float(hit.any(1).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=HERE / "out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    report = {}
    fwd = {"SASRec": sasrec_scores, "GRU4Rec": gru4rec_scores}
    for name, f in fwd.items():
        ckpts = sorted(glob.glob(str(args.out / "checkpoints" / f"{name}-*.pth")))
        fix = args.out / f"{name}_ref.npz"
        if not ckpts or not fix.exists():
            continue
        sd, cfg = read_checkpoint(ckpts[-1])
        d = np.load(fix, allow_pickle=False)
        seq, seq_len = torch.from_numpy(d["item_seq"]), torch.from_numpy(d["item_seq_len"])
        ref = torch.from_numpy(d["scores"])
        with torch.no_grad():
            mine = f(sd, cfg, seq, seq_len)
        top_ref = torch.topk(torch.cat([torch.full((len(ref), 1), -np.inf), ref[:, 1:]], 1), 10)
        top_mine = torch.topk(torch.cat([torch.full((len(ref), 1), -np.inf), mine[:, 1:]], 1), 10)
        target = torch.from_numpy(d["target_item"])
        report[name] = {
            "checkpoint": ckpts[-1],
            "max_abs_diff_scores": float((mine - ref).abs().max()),
            "same_top10_order_users": int((top_ref.indices == top_mine.indices).all(1).sum()),
            "n_users": len(ref),
            "fixture_ndcg@10_hr@10": recbole_metrics(ref, target),
            "pad_token": str(d["item_id_tokens"][0]),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
