"""Run by test_trainer.py under torchrun: trains a tiny GRU and records the weight digests."""

import json
import os
import sys

import torch

from recshrink.data.split import leave_one_out
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.models import build_model
from recshrink.train import TrainConfig, fit

torch.set_num_threads(1)
out = sys.argv[1]
data = synthetic(SyntheticConfig(users=120, items=40, categories=4, max_len=12))
split = leave_one_out(data, 12)
torch.manual_seed(0)
model = build_model("gru", data.num_items, dim=8, max_len=12)
res = fit(model, split, TrainConfig(epochs=2, batch_size=16, num_negatives=16), out,
          progress=False)
if os.environ.get("RANK") == "0":
    with open(os.path.join(out, "digests.json"), "w") as f:
        json.dump({"digests": res.rank_digests, "epochs": res.epochs}, f)
