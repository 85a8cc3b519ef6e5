import pytest
import torch

from recshrink.errors import RecshrinkError
from recshrink.models import build_model, builder_names, gru, lstm, nextitnet, sasrec
from recshrink.models.rnn import left_to_right_index

N = 50


def _seqs():
    return torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])


@pytest.mark.parametrize("name", builder_names())
def test_contract_shapes(name):
    m = build_model(name, N).eval()
    s = _seqs()
    assert m.encode(s).shape == (3, m.dim)
    scores = m.scores(s)
    assert scores.shape == (3, N + 1)
    assert torch.isinf(scores[:, 0]).all() and (scores[:, 0] < 0).all()
    vals, ids = m.recommend(s, 5)
    assert ids.shape == (3, 5) and (ids > 0).all() and (ids <= N).all()
    assert torch.allclose(vals, scores.gather(1, ids))
    assert torch.all(vals[:, :-1] >= vals[:, 1:])


@pytest.mark.parametrize("name", ["sasrec_base", "gru_small", "lstm_2layer", "cnn_small"])
def test_padding_invariance(name):
    """Extra left padding never changes the scores (batches are trimmed during training)."""
    torch.manual_seed(0)
    m = build_model(name, N).eval()
    s = _seqs()
    padded = torch.cat([torch.zeros(3, 7, dtype=torch.long), s], dim=1)
    assert torch.allclose(m.scores(s)[:, 1:], m.scores(padded)[:, 1:], atol=1e-5)


def test_long_history_keeps_last_max_len():
    m = sasrec(N, dim=16, layers=1, heads=2, max_len=4).eval()
    long = torch.tensor([[9, 8, 7, 1, 2, 3, 4]])
    assert torch.allclose(m.scores(long)[:, 1:], m.scores(long[:, -4:])[:, 1:])


def test_param_counts_by_hand():
    d, n = 8, N
    g = gru(n, dim=d)
    assert g.num_params() == (n + 1) * d + 3 * (d * d + d * d + d + d)
    lm = lstm(n, dim=d, hidden=12)
    h = 12
    assert lm.num_params() == (n + 1) * d + 4 * (d * h + h * h + 2 * h) + (h * d + d)
    c = nextitnet(n, dim=d, dilations=(1,), kernel=3)
    blocks = 2 * d + (d * d * 3 + d) + 2 * d + (d * d * 3 + d)
    assert c.num_params() == (n + 1) * d + blocks + 2 * d
    s = sasrec(n, dim=d, layers=1, heads=2, max_len=5, ffn_dim=16)
    layer = 2 * d + 4 * (d * d + d) + 2 * d + (d * 16 + 16) + (16 * d + d)
    assert s.num_params() == (n + 1) * d + 5 * d + layer + 2 * d


def test_wide_cnn_by_hand():
    """A residual stream wider than the item table: projections in and out, same contract."""
    d, w, n = 8, 12, N
    c = nextitnet(n, dim=d, width=w, dilations=(1,), kernel=2)
    blocks = 2 * w + (w * w * 2 + w) + 2 * w + (w * w * 2 + w)
    assert c.num_params() == (n + 1) * d + (d * w + w) + blocks + (w * d + d) + 2 * d
    assert c.builder_args["width"] == w and c.builder_args["channels"] == w
    assert "width" not in nextitnet(n, dim=d).builder_args  # older configs unchanged
    torch.manual_seed(0)
    c = nextitnet(n, dim=d, width=w, kernel=2).eval()
    s = _seqs()
    padded = torch.cat([torch.zeros(3, 5, dtype=torch.long), s], dim=1)
    assert torch.allclose(c.scores(s)[:, 1:], c.scores(padded)[:, 1:], atol=1e-5)
    a = c.forward_all(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    b = c.forward_all(torch.tensor([[1, 2, 3, 9, 9, 9]]))
    assert a.shape == (1, 6, d)
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6) and not torch.allclose(a[:, 3], b[:, 3])
    with pytest.raises(ValueError, match="width must be positive"):
        nextitnet(n, dim=d, width=0)


def test_teacher_and_student_sizes():
    """Students are at most 1/5 of the large teacher on a Beauty-sized catalogue."""
    teacher = build_model("sasrec_large", 12101)
    assert teacher.num_params() == 4_690_944
    for student in ("gru_small", "lstm_small", "cnn_small"):
        assert build_model(student, 12101).num_params() * 5 <= teacher.num_params()


def test_left_to_right_roundtrip():
    s = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]])
    to_right, to_left = left_to_right_index(s)
    right = s.gather(1, to_right)
    assert right.tolist() == [[3, 4, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]]
    assert right.gather(1, to_left).tolist() == s.tolist()


@pytest.mark.parametrize("name", ["gru_small", "gru_wide", "lstm_2layer"])
def test_rnn_encode_is_the_last_state_of_forward_all(name):
    """The RNNs' own encode (last position only) equals the generic one, an empty history
    included."""
    torch.manual_seed(0)
    m = build_model(name, N).eval()
    s = torch.cat([_seqs(), torch.zeros(1, 6, dtype=torch.long)])  # [4, 6], row 3 empty
    torch.testing.assert_close(m.encode(s), m.forward_all(s)[:, -1], rtol=0, atol=1e-6)


def test_sasrec_is_causal():
    """The state at position t does not depend on later items."""
    torch.manual_seed(0)
    m = sasrec(N, dim=16, layers=2, heads=2, max_len=6).eval()
    a = m.forward_all(torch.tensor([[1, 2, 3, 4, 5, 6]]))
    b = m.forward_all(torch.tensor([[1, 2, 3, 9, 9, 9]]))
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_build_model_errors():
    with pytest.raises(RecshrinkError, match="unknown model 'nope'"):
        build_model("nope", 10)
    with pytest.raises(RecshrinkError, match="bad arguments"):
        build_model("gru", 10, colour=3)
    with pytest.raises(RecshrinkError, match="not divisible"):
        build_model("sasrec", 10, dim=10, heads=3)
    with pytest.raises(ValueError, match="k must be"):
        build_model("gru", 10).recommend(torch.tensor([[1]]), 11)
