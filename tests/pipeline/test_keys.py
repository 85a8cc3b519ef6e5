"""Resume, cache and manifest keys come from canonical JSON of the config; runs keyed the earlier
way (a config's ``repr``) keep resuming through a one-time migration."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import recshrink.compress.distill as distill_mod
from recshrink.compress.distill import DistillConfig, config_key, distill_fit
from recshrink.data.synthetic import SyntheticConfig, synthetic
from recshrink.models import build_model
from recshrink.pipeline.manifests import Manifests
from recshrink.recipe import EvalSpec, ModelSpec, PruneSpec
from recshrink.train.config import TrainConfig, config_json, without_later_defaults
from recshrink.train.trainer import fit, state_digest
from recshrink.version import __version__


def _old_manifest_key(stage, config, fingerprint, protocol, *parents) -> str:
    """Manifests.key as it was written before the public API (the Beauty runs' keys)."""
    blob = json.dumps([stage, without_later_defaults(config), fingerprint, __version__, protocol,
                       *parents], sort_keys=True, default=str)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def test_manifest_keys_are_unchanged():
    proto = EvalSpec().model_dump(mode="json")
    m = Manifests("fp", protocol=proto)
    spec = ModelSpec(name="t", model="sasrec_large", train=TrainConfig(lr=5e-4, lr_decay=0.3))
    cfg = spec.model_dump(mode="json")
    assert m.key("teacher", cfg) == _old_manifest_key("teacher", cfg, "fp", proto)
    job = PruneSpec(name="p", model="s").model_dump(mode="json")
    assert m.key("prune", job, "abc") == _old_manifest_key("prune", job, "fp", proto, "abc")
    # configs as objects give the same key as their JSON dump
    assert config_json(TrainConfig()) == config_json(json.loads(config_json(TrainConfig())))


def test_manifest_written_under_a_legacy_key_is_migrated(tmp_path):
    m = Manifests("fp")
    where = tmp_path / "pruned"
    where.mkdir()
    (where / "config.json").write_text("{}")
    (where / "model.safetensors").write_text("")
    m.record("prune", where, "old-key", 1.0, {"metrics": {"ndcg@10": 0.5}})
    assert m.hit("prune", where, "new-key") is None
    hit = m.hit("prune", where, "new-key", legacy="old-key")
    assert hit["entry"]["metrics"]["ndcg@10"] == 0.5
    assert json.loads((where / "manifest.json").read_text())["key"] == "new-key"  # migrated
    assert m.hit("prune", where, "new-key") is not None  # once: the new key alone now matches


def _tiny():
    data = synthetic(SyntheticConfig(users=60, items=20, categories=4, min_len=4, max_len=8))
    return data, data.split(8)


def test_training_state_under_an_earlier_key_resumes(tmp_path):
    torch.set_num_threads(1)
    data, split = _tiny()
    cfg = TrainConfig(epochs=2, batch_size=32, num_negatives=8, patience=5)
    per_epoch = -(-sum(1 for s in split.train if len(s) >= 2) // 32)

    def model():
        torch.manual_seed(0)
        return build_model("gru", data.num_items, dim=8, max_len=8)

    def interrupted(work, key):
        calls = {"n": 0}

        def hook(batch, gen):
            calls["n"] += 1
            if calls["n"] > per_epoch:  # the first batch of epoch 2
                raise KeyboardInterrupt
            return batch

        with pytest.raises(KeyboardInterrupt):
            fit(model(), split, cfg, work, batch_hook=hook, run_key=key, progress=False)

    old = "prune|PruneConfig(ratio=0.5, ...)|1"  # a run keyed by the config's repr
    interrupted(tmp_path / "a", old)
    assert fit(model(), split, cfg, tmp_path / "a", run_key="prune|{...}|1",
               progress=False).resumed_from == 0  # another key alone: a fresh start
    interrupted(tmp_path / "b", old)
    res = fit(model(), split, cfg, tmp_path / "b", run_key=("prune|{...}|1", old), progress=False)
    assert res.resumed_from == 1 and res.epochs == 2  # the earlier form resumes


def test_distillation_keys_are_canonical_with_the_repr_form_accepted(monkeypatch, tmp_path):
    data, split = _tiny()
    torch.manual_seed(0)
    teacher = build_model("sasrec", data.num_items, dim=8, layers=1, heads=2, max_len=8)
    student = build_model("gru", data.num_items, dim=8, max_len=8)
    seen = {}

    def capture(*args, run_key, **kwargs):
        seen["keys"] = run_key
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(distill_mod, "fit", capture)
    cfg = DistillConfig(top_m=5, kd_negatives=8, init_items="pca")
    try:
        distill_fit(teacher, student, split, TrainConfig(num_negatives=8), cfg, tmp_path,
                    run_key=("new", "old"), progress=False)  # fmt: skip
    except KeyboardInterrupt:
        pass
    digest = state_digest(teacher)
    assert seen["keys"][0] == f"distill|new|{digest}|{config_json(cfg)}"
    assert f"distill|old|{digest}|{config_key(cfg)}" in seen["keys"][1:]
    assert "DistillConfig(" not in seen["keys"][0]
