"""Cost of one training step against catalogue size: dense AdamW vs sparse item gradients.

Times the trainer's own step (sampled softmax with logQ-corrected popularity negatives, AdamW or
AdamW + SparseAdam on the item table, :mod:`recshrink.train.optim`) on a GRU student, for
catalogues of 10k to 1M items, on batches drawn from a Zipf catalogue. Also records the bytes
of the item table and of its optimizer state. Run with the machine to itself:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_train_step.py --items 10000,100000,1000000

Prints a markdown table (ms per step, median of ``--steps`` after two warm-up steps).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from recshrink.models import build_model  # noqa: E402
from recshrink.train import TrainConfig  # noqa: E402
from recshrink.train.losses import sample_negatives  # noqa: E402
from recshrink.train.optim import Optimizer  # noqa: E402
from recshrink.train.trainer import next_item_loss, sampling_probs  # noqa: E402


def zipf_batch(n: int, users: int, length: int, gen: torch.Generator, probs: torch.Tensor,
               negatives: int) -> dict:  # fmt: skip
    ids = torch.multinomial(probs, users * (length + 1), replacement=True, generator=gen)
    seq = ids.view(users, length + 1)
    return {"inputs": seq[:, :-1], "targets": seq[:, 1:],
            "negatives": sample_negatives(n, negatives, gen, probs)}  # fmt: skip


def step_ms(n: int, sparse: bool, args: argparse.Namespace) -> tuple[float, int]:
    torch.manual_seed(0)
    model = build_model("gru", n, dim=args.dim, max_len=args.length)
    pop = 1.0 / torch.arange(1, n + 2, dtype=torch.float64) ** 1.0  # Zipf counts
    pop[0] = 0.0
    probs = sampling_probs(pop)
    cfg = TrainConfig(loss="sampled", negatives="popularity", num_negatives=args.negatives)
    loss_fn = next_item_loss(cfg, pop)
    opt = Optimizer(model, model, lr=1e-3, weight_decay=0.0, sparse_items=sparse)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.steps + 2):
        batch = zipf_batch(n, args.batch, args.length, gen, probs, args.negatives)
        t0 = time.perf_counter()
        opt.zero_grad()
        loss_fn(model, batch).backward()
        opt.step()
        if i >= 2:
            times.append(1e3 * (time.perf_counter() - t0))
    state = sum(t.numel() * t.element_size() for s in (opt.dense.state, *(
        [opt.sparse.state] if opt.sparse else [])) for v in s.values() for t in v.values()
        if torch.is_tensor(t) and t.dim() > 0)  # fmt: skip
    return statistics.median(times), state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256, help="users per step")
    ap.add_argument("--length", type=int, default=20, help="positions per user")
    ap.add_argument("--negatives", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"GRU d{args.dim}, {args.batch} users x {args.length} positions, {args.negatives} "
          f"shared popularity negatives, {torch.get_num_threads()} thread(s)")
    print("| items | table MB | dense ms/step | sparse ms/step | speed-up | optimizer state MB |")
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in args.items.split(",")):
        dense, state = step_ms(n, False, args)
        sparse, _ = step_ms(n, True, args)
        table = (n + 1) * args.dim * 4 / 2**20
        print(f"| {n:,} | {table:.0f} | {dense:.1f} | {sparse:.1f} | {dense / sparse:.1f}x "
              f"| {state / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    main()
