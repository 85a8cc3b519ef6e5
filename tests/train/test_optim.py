import pytest
import torch

from recshrink.compress.distill import DistillConfig, distill_fit
from recshrink.data.split import leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.errors import RecshrinkError
from recshrink.models import build_model
from recshrink.train import TrainConfig, evaluate, fit, model_scorer
from recshrink.train.optim import SPARSE_FROM_ITEMS, Optimizer, use_sparse_items
from recshrink.train.trainer import next_item_loss


@pytest.fixture(scope="module")
def tiny():
    data = synthetic(SyntheticConfig(users=300, items=60, categories=6, max_len=15, seed=1))
    return data, leave_one_out(data, 15)


def test_when_sparse_applies():
    big = SPARSE_FROM_ITEMS
    assert use_sparse_items("auto", big, weight_decay=0.0, world=1)
    assert not use_sparse_items("auto", big - 1, weight_decay=0.0, world=1)
    assert not use_sparse_items("auto", big, weight_decay=0.01, world=1)
    assert not use_sparse_items("auto", big, weight_decay=0.0, world=2)
    assert not use_sparse_items("auto", big, weight_decay=0.0, world=1, dense_table="loss: ce")
    assert not use_sparse_items("dense", big, weight_decay=0.0, world=1)
    assert use_sparse_items("sparse", 10, weight_decay=0.0, world=1)
    with pytest.raises(RecshrinkError, match="item_grad: .* weight_decay > 0"):
        use_sparse_items("sparse", 10, weight_decay=0.01, world=1)
    with pytest.raises(RecshrinkError, match="loss: ce"):
        use_sparse_items("sparse", 10, weight_decay=0.0, world=1, dense_table="loss: ce")


def _steps(model, batches, sparse):
    cfg = TrainConfig(num_negatives=8)
    loss_fn = next_item_loss(cfg)
    opt = Optimizer(model, model, lr=0.01, weight_decay=0.0, sparse_items=sparse)
    grads = []
    for batch in batches:
        opt.zero_grad()
        loss_fn(model, batch).backward()
        grads.append(model.item_emb.weight.grad)
        opt.step()
    opt.close(model)
    return grads


def test_sparse_updates_only_the_rows_a_batch_touched():
    n = 40
    b1 = {"inputs": torch.tensor([[0, 1, 2]]), "targets": torch.tensor([[0, 2, 3]]),
          "negatives": torch.tensor([4, 5])}  # fmt: skip
    b2 = {"inputs": torch.tensor([[0, 6, 7]]), "targets": torch.tensor([[0, 7, 8]]),
          "negatives": torch.tensor([9, 10])}  # fmt: skip
    torch.manual_seed(0)
    dense = build_model("gru", n, dim=8, max_len=3, dropout=0.0)
    sparse = build_model("gru", n, dim=8, max_len=3, dropout=0.0)
    sparse.load_state_dict(dense.state_dict())
    start = dense.item_emb.weight.detach().clone()

    _steps(dense, [b1], False)
    g = _steps(sparse, [b1], True)[0]
    # the gradient holds the batch's rows alone: inputs 1-2 (padding row 0 with zeros),
    # targets 2-3, negatives 4-5
    assert g.is_sparse
    assert set(g.coalesce().indices()[0].tolist()) - {0} == {1, 2, 3, 4, 5}
    # one step from the same state: lazy Adam equals Adam (both moments start at zero)
    torch.testing.assert_close(sparse.item_emb.weight, dense.item_emb.weight)
    assert not sparse.item_emb.sparse  # put back for saving and export

    _steps(dense, [b2], False)
    _steps(sparse, [b2], True)
    moved = lambda m: (m.item_emb.weight.detach() != start).any(-1)  # noqa: E731
    # dense AdamW keeps moving step 1's rows on their momentum; SparseAdam leaves them alone
    assert moved(dense)[1:6].all()
    touched = set(range(1, 11))
    untouched = [i for i in range(n + 1) if i not in touched]
    assert not moved(sparse)[untouched].any() and not moved(dense)[untouched].any()


def test_sparse_clip_matches_the_dense_norm():
    torch.manual_seed(0)
    model = build_model("gru", 30, dim=8, max_len=4, dropout=0.0)
    batch = {"inputs": torch.tensor([[0, 1, 2, 3]]), "targets": torch.tensor([[0, 2, 3, 4]]),
             "negatives": torch.tensor([5, 6, 7])}  # fmt: skip
    loss_fn = next_item_loss(TrainConfig(num_negatives=3))
    opt = Optimizer(model, model, lr=0.01, weight_decay=0.0, sparse_items=True)
    loss_fn(model, batch).backward()
    dense_grads = [p.grad.to_dense() for p in model.parameters()]
    norm = torch.sqrt(sum(g.pow(2).sum() for g in dense_grads))
    opt.clip_grad_norm(float(norm) / 2)
    after = torch.sqrt(sum(p.grad.to_dense().pow(2).sum() for p in model.parameters()))
    assert float(after) == pytest.approx(float(norm) / 2, rel=1e-4)


def test_fit_and_distill_on_sparse_item_gradients(tiny, tmp_path):
    data, split = tiny
    torch.manual_seed(0)
    model = build_model("gru", data.num_items, dim=16, max_len=15)
    before = evaluate(model_scorer(model), split.valid)["ndcg@10"]
    cfg = TrainConfig(epochs=5, batch_size=32, lr=5e-3, num_negatives=20, patience=5,
                      item_grad="sparse", grad_clip=5.0)  # fmt: skip
    res = fit(model, split, cfg, tmp_path / "t", progress=False)
    assert res.best_valid["ndcg@10"] > before + 0.05
    assert not model.item_emb.sparse

    student = build_model("gru", data.num_items, dim=8, max_len=15)
    kd = DistillConfig(top_m=10, kd_negatives=20)
    sres, _ = distill_fit(model, student, split, cfg, kd, tmp_path / "s", progress=False)
    assert sres.best_valid["ndcg@10"] > before + 0.05
    with pytest.raises(RecshrinkError, match="kd_scope: full"):
        distill_fit(model, build_model("gru", data.num_items, dim=8, max_len=15), split, cfg,
                    DistillConfig(kd_scope="full"), tmp_path / "f", progress=False)
