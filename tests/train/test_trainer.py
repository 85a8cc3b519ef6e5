import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recshrink.data.split import leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.models import build_model
from recshrink.train import TrainConfig, evaluate, fit, model_scorer


@pytest.fixture(scope="module")
def tiny():
    data = synthetic(SyntheticConfig(users=300, items=60, categories=6, max_len=15, seed=1))
    return data, leave_one_out(data, 15)


@pytest.mark.parametrize("loss", ["ce", "sampled", "bce"])
def test_training_learns(tiny, tmp_path, loss):
    data, split = tiny
    torch.manual_seed(0)
    model = build_model("sasrec", data.num_items, dim=16, layers=1, heads=2, max_len=15)
    before = evaluate(model_scorer(model), split.valid)["ndcg@10"]
    cfg = TrainConfig(epochs=6, batch_size=32, lr=5e-3, loss=loss, num_negatives=20, patience=6)
    res = fit(model, split, cfg, tmp_path, progress=False)
    after = evaluate(model_scorer(model), split.valid)["ndcg@10"]
    assert res.best_valid["ndcg@10"] == pytest.approx(after)
    assert after > before + 0.05
    assert 1 <= res.best_epoch <= res.epochs == 6
    assert (tmp_path / "best.safetensors").exists() and (tmp_path / "train_state.pt").exists()


def test_resume_matches_uninterrupted(tiny, tmp_path):
    data, split = tiny
    cfg = TrainConfig(epochs=4, batch_size=32, num_negatives=20, patience=10)

    def run(work, hook=None, c=cfg):
        torch.manual_seed(0)
        model = build_model("gru", data.num_items, dim=12, max_len=15)
        res = fit(model, split, c, work, batch_hook=hook, progress=False, run_key="k")
        return model, res

    full, _ = run(tmp_path / "a")

    calls = {"n": 0}
    n_batches = -(-sum(1 for s in split.train if len(s) >= 2) // 32)

    def interrupt(batch, gen):
        calls["n"] += 1
        if calls["n"] > 2 * n_batches + 1:  # in the middle of epoch 3
            raise KeyboardInterrupt
        return batch

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", interrupt)
    # a new time budget or thread count does not start the run over
    resumed, res = run(tmp_path / "b", c=dataclasses.replace(cfg, max_minutes=60.0, threads=1))
    assert res.resumed_from == 2 and res.epochs == 4
    # the run's time counts the two epochs saved before the interruption, not this call alone
    saved = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert res.seconds == pytest.approx(saved["elapsed"], abs=0.5)
    assert res.seconds >= sum(h["seconds"] for h in res.history)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


def test_early_stopping_and_budget(tiny, tmp_path):
    data, split = tiny
    torch.manual_seed(0)
    model = build_model("gru", data.num_items, dim=8, max_len=15)
    res = fit(model, split, TrainConfig(epochs=50, lr=1e-6, patience=2, num_negatives=8),
              tmp_path / "a", progress=False)
    assert res.epochs < 50 and res.epochs - res.best_epoch == 2
    res = fit(model, split, TrainConfig(epochs=50, max_minutes=1e-6, num_negatives=8),
              tmp_path / "b", progress=False)
    assert res.epochs == 1
    # the budget is checked after every step: the first epoch stopped after one of its batches,
    # and that partial epoch was still validated
    steps, n = map(int, res.history[0]["batches"].split("/"))
    assert steps == 1 and n > 1 and "valid_ndcg@10" in res.history[0]
    # called again with the same budget, a run that ended on it stays ended; a larger one goes on
    again = fit(model, split, TrainConfig(epochs=50, max_minutes=1e-6, num_negatives=8),
                tmp_path / "b", progress=False)
    assert again.epochs == 1 and again.resumed_from == 1
    more = fit(model, split, TrainConfig(epochs=50, max_minutes=2e-6, num_negatives=8),
               tmp_path / "b", progress=False)
    assert more.epochs == 2


def test_validation_on_a_fixed_user_sample(tiny, tmp_path):
    """valid_users: each epoch ranks the same seeded sample; the best epoch's metrics are the
    sample's, equal to evaluating the saved best weights on that sample."""
    data, split = tiny
    sample = split.valid.sample(50, seed=3)
    again = split.valid.sample(50, seed=3)
    assert len(sample) == 50 and (sample.users == again.users).all()
    assert (sorted(sample.users) == sample.users).all()  # original order kept
    rows = [list(split.valid.users).index(u) for u in sample.users]
    assert (split.valid.targets[rows] == sample.targets).all()
    assert [list(s) for s in sample.seen] == [list(split.valid.seen[r]) for r in rows]
    assert split.valid.sample(None) is split.valid and split.valid.sample(10**6) is split.valid
    torch.manual_seed(0)
    model = build_model("gru", data.num_items, dim=8, max_len=15)
    cfg = TrainConfig(epochs=3, lr=5e-3, num_negatives=8, valid_users=50, seed=3)
    res = fit(model, split, cfg, tmp_path, progress=False)
    assert res.best_valid["count"] == 50
    assert res.best_valid["ndcg@10"] == pytest.approx(evaluate(model_scorer(model), sample)["ndcg@10"])
    with pytest.raises(ValueError):
        TrainConfig(valid_users=0)
    from recshrink.train.config import config_json
    assert "valid_users" not in config_json(TrainConfig())  # earlier runs' keys unchanged


def test_lr_decay_on_plateau_and_resume(tiny, tmp_path):
    """lr 1e-12 leaves float32 weights unchanged, so validation never improves after epoch 1: the
    rate halves every 2 stale evaluations, and early stopping still counts from the best epoch."""
    data, split = tiny
    cfg = TrainConfig(epochs=50, lr=1e-12, patience=5, num_negatives=8, lr_decay=0.5,
                      lr_patience=2)

    def model():
        torch.manual_seed(0)
        return build_model("gru", data.num_items, dim=8, max_len=15)

    res = fit(model(), split, cfg, tmp_path / "a", progress=False)
    assert res.best_epoch == 1 and res.epochs == 6
    expected = [1e-12, 1e-12, 5e-13, 5e-13, 2.5e-13, 2.5e-13]
    assert [h["lr"] for h in res.history] == pytest.approx(expected, rel=1e-9)
    # one epoch per call (a new time budget resumes): the rate and the count survive resuming
    m = model()
    for n in range(1, 7):
        part = fit(m, split, dataclasses.replace(cfg, max_minutes=n * 1e-6), tmp_path / "b",
                   progress=False)
        assert part.epochs == n
    assert [h["lr"] for h in part.history] == pytest.approx(expected, rel=1e-9)
    # the default (no decay) keeps the rate and records none
    flat = fit(model(), split, dataclasses.replace(cfg, lr_decay=1.0), tmp_path / "c",
               progress=False)
    assert flat.epochs == 6 and all("lr" not in h for h in flat.history)
    assert TrainConfig().lr_decay == 1.0
    # min_lr floors every decay (a decay each stale evaluation: 5e-13, then 4e-13 not 2.5e-13)
    floor = fit(model(), split, dataclasses.replace(cfg, lr_patience=1, min_lr=4e-13),
                tmp_path / "d", progress=False)
    assert [h["lr"] for h in floor.history] == pytest.approx(
        [1e-12, 5e-13, 4e-13, 4e-13, 4e-13, 4e-13], rel=1e-9)


def test_later_options_leave_old_keys_alone():
    """Options added later are left out of resume/manifest keys at their old-behaviour value."""
    from recshrink.train.config import without_later_defaults

    spec = {"train": {"lr": 0.002, "lr_decay": 1.0, "lr_patience": 2, "min_lr": 0.0},
            "distill": {"kd_tail": "plain", "top_m": 100}}
    assert without_later_defaults(spec) == {"train": {"lr": 0.002}, "distill": {"top_m": 100}}
    spec["train"]["lr_decay"] = 0.3
    assert without_later_defaults(spec)["train"] == {"lr": 0.002, "lr_decay": 0.3}


def test_ddp_two_processes_identical_weights(tmp_path):
    worker = Path(__file__).with_name("_ddp_worker.py")
    # --standalone: a free rendezvous port each run (a fixed port can collide with another run)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(tmp_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as exc:  # show what the ranks printed
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"torchrun did not finish in 240 s; stderr tail:\n{err[-2000:]}")
    # a failed rank's own message comes before the launcher's traceback: keep both
    own = [ln for ln in proc.stderr.splitlines()
           if any(w in ln for w in ("terminate", "gloo", "Error", "abort", "what()"))][:20]
    assert proc.returncode == 0, "\n".join(own) + "\n...\n" + proc.stderr[-2000:]
    out = json.loads((tmp_path / "digests.json").read_text())
    assert out["epochs"] == 2
    assert len(out["digests"]) == 2 and out["digests"][0] == out["digests"][1]


def test_evaluate_ranks_in_user_order(tiny):
    """Per-user ranks come back in the eval set's user order, and average to the metrics."""
    from recshrink.metrics import ranking_metrics

    data, split = tiny
    torch.manual_seed(0)
    model = build_model("gru", data.num_items, dim=8)
    metrics, users = evaluate(model_scorer(model), split.test, batch_size=64, per_user=True)
    ranks = users.ranks
    assert ranks.shape == (len(split.test.targets),)
    assert tuple(users.top.shape) == (len(split.test.targets), 20)
    _, again = evaluate(model_scorer(model), split.test, batch_size=7, per_user=True)
    assert ranks.tolist() == again.ranks.tolist()  # the order does not depend on the batching
    assert torch.equal(users.top, again.top)
    assert ranking_metrics(ranks)["ndcg@10"] == pytest.approx(metrics["ndcg@10"], abs=1e-12)
    # user 0's rank by hand: items scoring above its target, history masked
    hist = torch.from_numpy(split.test.histories[:1])
    scores = model_scorer(model)(hist)[0].clone()
    scores[0] = float("-inf")
    scores[hist[0][hist[0] > 0]] = float("-inf")
    target = int(split.test.targets[0])
    assert torch.isfinite(scores[target])  # the target is not in this history
    assert ranks[0] == int((scores > scores[target]).sum())
    # and its top items: the 20 best scores, best first
    assert users.top[0].tolist() == torch.topk(scores, 20).indices.tolist()


def test_evaluate_keeps_score_blocks_bounded(monkeypatch):
    import importlib

    ev = importlib.import_module("recshrink.train.evaluate")
    data = synthetic(SyntheticConfig(users=120, items=60, categories=6, max_len=10))
    split = leave_one_out(data, 10)
    torch.manual_seed(0)
    model = build_model("gru", data.num_items, dim=8, max_len=10).eval()
    whole = ev.evaluate(ev.model_scorer(model), split.test)
    rows = []
    real = ev.model_scorer(model)

    def score(h):
        rows.append(len(h))
        return real(h)

    monkeypatch.setattr(ev, "MAX_SCORE_ELEMS", 16 * (data.num_items + 1))  # 16 users per block
    blocked = ev.evaluate(score, split.test)
    assert rows[0] == 1 and max(rows[1:]) == 16 and sum(rows[1:]) == 120
    assert blocked == whole
