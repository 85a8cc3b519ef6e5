import math

import torch

from recshrink.train.losses import bce_loss, full_softmax_ce, sampled_softmax_ce

TABLE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # row 0 = padding
H = torch.tensor([[1.0, 0.0], [0.0, 2.0]])


def test_full_softmax_by_hand():
    # user 0 logits over items 1..3: [1, 0, 1], target 1; user 1: [0, 2, 2], target 3
    loss = full_softmax_ce(H, torch.tensor([1, 3]), TABLE)
    l0 = -math.log(math.e / (math.e + 1 + math.e))
    l1 = -math.log(math.e**2 / (1 + 2 * math.e**2))
    assert math.isclose(loss.item(), (l0 + l1) / 2, rel_tol=1e-6)


def test_sampled_softmax_masks_accidental_hits():
    # shared negatives [2, 1]: for user 0 (target 1) negative 1 is masked -> logits [1, 0]
    # user 1 (target 3): pos 2, negatives items 2 and 1 -> [2, 2, 0]
    loss = sampled_softmax_ce(H, torch.tensor([1, 3]), TABLE, torch.tensor([2, 1]))
    l0 = math.log(1 + math.exp(-1))
    l1 = -math.log(math.e**2 / (2 * math.e**2 + 1))
    assert math.isclose(loss.item(), (l0 + l1) / 2, rel_tol=1e-6)


def test_sampled_softmax_logq():
    log_q = torch.tensor([0.0, 0.5, 1.0, 0.0])
    loss = sampled_softmax_ce(H[:1], torch.tensor([1]), TABLE, torch.tensor([2]), log_q)
    # corrected logits: pos 1 - 0.5 = 0.5, neg 0 - 1.0 = -1.0
    expected = -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(-1.0)))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_bce_by_hand():
    loss = bce_loss(H, torch.tensor([1, 3]), TABLE, torch.tensor([2, 1]))
    # user 0: pos 1, neg 0; user 1: pos 2, neg 0
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (sp(-1) + sp(-2)) / 2 + (sp(0) + sp(0)) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
