"""Train one RecBole sequential model (BERT4Rec, LightSANs, CORE, ...) with RecBole's own code and
protocol, keep its checkpoint and numbers, and export it to ONNX as a black-box teacher.

Runs in the separate RecBole env (benchmarks/recbole/setup.sh), never in recshrink's venv:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 19 benchmarks/recbole/.venv/bin/python \\
        benchmarks/recbole/train_foreign.py --model BERT4Rec \\
        --dataset-dir benchmarks/recbole/out/data/beauty --epochs 50 --max-minutes 240

``--dataset-dir`` is a folder ``<name>/`` holding ``<name>.inter`` (beauty_atomic.py writes one);
its name is RecBole's ``dataset`` and its parent RecBole's ``data_path``. The protocol is
train_ref.py's: leave-one-out by time (``LS: valid_and_test``, ``order: TO``), full ranking over
every item (only [PAD] masked), NDCG@10 / Hit@10, best valid NDCG@10 checkpoint, CE loss, no
negative sampling, MAX_ITEM_LIST_LENGTH 50, Adam 1e-3, seed 2020, RecBole's default model
hyper-parameters unless ``--set key=value`` (YAML values, repeatable: ``--set hidden_size=32``).

Writes ``<out>/<Model>-<dataset>/`` (default ``out = benchmarks/recbole/out/foreign``):

  <Model>-<time>.pth    RecBole's own Trainer checkpoint (best valid NDCG@10)
  <Model>.onnx          forward(item_seq [B, L] int64, item_seq_len [B] int64)
                        -> scores [B, n_items] float32 = full_sort_predict (column 0 = [PAD], raw);
                        right-padded histories, RecBole's item indices; metadata num_items, max_len
  <Model>.items.json    raw item token of each index 1..n_items-1 (field2id_token['item_id'][1:]);
                        the same list as <Model>-<time>.items.json beside the .pth
  <Model>_ref.npz       the first --n-rows test rows as RecBole feeds them (item_seq, item_seq_len,
                        user_id/target_item indices, user/item tokens) and RecBole's own
                        full_sort_predict scores (eval mode, raw)
  results.json          RecBole's valid/test results of the checkpoint, epoch times, ONNX check
  log/, log_tensorboard/  RecBole's logs (written relative to the cwd, which is this folder)

BERT4Rec's ``full_sort_predict`` appends a mask token with a Python loop over the batch
(``reconstruct_test_data``), which does not trace with a dynamic batch; the exported copy uses
the same operation vectorised (``scatter`` at ``item_seq_len``, then drop column 0, as RecBole
does), checked equal to RecBole's loop before export. Every other model's own
``full_sort_predict`` is exported unchanged.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402
from train_ref import recbole_config as ref_config  # noqa: E402  (same folder)
from train_ref import reload_and_evaluate, stop_after  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def recbole_config(model: str, dataset: str, data_path: Path, ckpt_dir: Path, epochs: int,
                   seed: int, overrides: dict) -> dict:
    """train_ref.py's protocol and training settings, on ``dataset`` (no rating column), with
    validation every epoch and the ``--set`` overrides."""
    cfg = ref_config(model, data_path, ckpt_dir, epochs, seed)
    cfg.update({"dataset": dataset, "eval_step": 1,
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]}})
    cfg.update(overrides)
    return cfg


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _bert4rec_reconstruct(self, item_seq, item_seq_len):
    """RecBole BERT4Rec.reconstruct_test_data without the Python loop over the batch: a zero
    column appended, the mask token written at ``item_seq_len``, column 0 dropped."""
    pad = torch.zeros_like(item_seq[:, :1])
    seq = torch.cat((item_seq, pad), dim=-1)  # [B, L + 1]
    mask = torch.full_like(item_seq_len.unsqueeze(-1), self.mask_token)  # [B, 1]
    seq = seq.scatter(1, item_seq_len.unsqueeze(-1), mask)
    return seq[:, 1:]


class FullSort(nn.Module):
    """``forward(item_seq, item_seq_len) -> full_sort_predict scores [B, n_items]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seq_field, self.len_field = model.ITEM_SEQ, model.ITEM_SEQ_LEN

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        # full_sort_predict only indexes its Interaction by field name: a dict traces
        batch = {self.seq_field: item_seq, self.len_field: item_seq_len}
        return self.model.full_sort_predict(batch).view(item_seq.shape[0], -1)


def export_onnx(model: nn.Module, sub, path: Path, num_items: int, max_len: int) -> dict:
    """Export ``FullSort`` of a copy of ``model`` (dynamo first, TorchScript as a fallback)."""
    import onnx

    wrapper = FullSort(_patched(model)).eval()
    seq = sub[model.ITEM_SEQ][:8].clone()
    lens = sub[model.ITEM_SEQ_LEN][:8].clone()
    info: dict = {}
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper, (seq, lens), str(path), dynamo=True,
                input_names=["item_seq", "item_seq_len"], output_names=["scores"],
                dynamic_shapes={"item_seq": {0: batch}, "item_seq_len": {0: batch}},
                external_data=False,
            )
        info["exporter"] = "dynamo"
    except Exception as exc:  # noqa: BLE001
        info["dynamo_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        print("dynamo export failed, trying dynamo=False:", info["dynamo_error"], file=sys.stderr)
        try:
            with torch.no_grad():
                torch.onnx.export(
                    wrapper, (seq, lens), str(path), dynamo=False,
                    input_names=["item_seq", "item_seq_len"], output_names=["scores"],
                    dynamic_axes={"item_seq": {0: "batch"}, "item_seq_len": {0: "batch"},
                                  "scores": {0: "batch"}},
                    opset_version=18,
                )
            info["exporter"] = "torchscript (dynamo=False)"
        except Exception as exc2:  # noqa: BLE001
            info["torchscript_error"] = (
                f"{type(exc2).__name__}: {str(exc2).strip().splitlines()[0][:300]}")
            info["exporter"] = None
            path.unlink(missing_ok=True)
            print("dynamo=False failed too:", info["torchscript_error"], file=sys.stderr)
            return info
    info["export_s"] = round(time.perf_counter() - t0, 1)
    proto = onnx.load(str(path))
    for key, value in {"num_items": str(num_items), "max_len": str(max_len),
                       "padding": "right", "source": f"recbole:{type(model).__name__}"}.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(path))
    info["bytes"] = path.stat().st_size
    return info


def check_onnx(path: Path, seq: np.ndarray, lens: np.ndarray, ref: np.ndarray) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = {"inputs": [(i.name, i.type, i.shape) for i in sess.get_inputs()],
           "outputs": [(o.name, o.type, o.shape) for o in sess.get_outputs()]}
    got = sess.run(None, {"item_seq": seq, "item_seq_len": lens})[0]
    out["rows"] = int(len(seq))
    out["max_abs_diff"] = float(np.abs(got - ref).max())
    out["max_abs_diff_excl_pad_column"] = float(np.abs(got[:, 1:] - ref[:, 1:]).max())
    out["same_top10"] = int(sum(
        np.array_equal(np.argsort(-got[r, 1:], kind="stable")[:10],
                       np.argsort(-ref[r, 1:], kind="stable")[:10]) for r in range(len(seq))))
    one = sess.run(None, {"item_seq": seq[:1], "item_seq_len": lens[:1]})[0]  # batch 1
    out["batch1_max_abs_diff"] = float(np.abs(one - ref[:1]).max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True,
                    help="RecBole model name (BERT4Rec, LightSANs, CORE...)")
    ap.add_argument("--dataset-dir", type=Path, required=True,
                    help="folder <name>/ with <name>.inter")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop after the first epoch (and its validation) that ends past this "
                         "wall-clock budget (best-valid checkpoint kept)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="RecBole config override (YAML value), repeatable")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "foreign")
    ap.add_argument("--n-rows", type=int, default=200, help="test rows in the fixture / ONNX check")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--run-name", default=None,
                    help="run folder under --out (default <Model>-<dataset>)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    ds_dir = args.dataset_dir.resolve()
    name = ds_dir.name
    if not (ds_dir / f"{name}.inter").is_file():
        sys.exit(f"{ds_dir}: no {name}.inter")
    run_dir = (args.out / (args.run_name or f"{args.model}-{name}")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(run_dir)  # RecBole writes log/ and log_tensorboard/ relative to the cwd
    overrides = parse_sets(args.set)
    config = Config(model=args.model, dataset=name, config_dict=recbole_config(
        args.model, name, ds_dir.parent, run_dir, args.epochs, args.seed, overrides))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(args.threads)
    t_data = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    data_s = time.perf_counter() - t_data
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epoch_s: list[float] = []
    valid_s: list[float] = []
    orig_train_epoch, orig_valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train_epoch(*a, **k):
        t0 = time.perf_counter()
        r = orig_train_epoch(*a, **k)
        epoch_s.append(round(time.perf_counter() - t0, 2))
        print(f"epoch {len(epoch_s)}: train {epoch_s[-1]:.1f} s, loss {float(r):.4f}", flush=True)
        return r

    def timed_valid_epoch(*a, **k):
        t0 = time.perf_counter()
        r = orig_valid_epoch(*a, **k)
        valid_s.append(round(time.perf_counter() - t0, 2))
        return r

    trainer._train_epoch, trainer._valid_epoch = timed_train_epoch, timed_valid_epoch
    t_start = time.perf_counter()
    budget = stop_after(args.max_minutes, t_start)
    best_valid_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_s = time.perf_counter() - t_start
    ckpt_file = Path(trainer.saved_model_file)

    own_reload, test_result, valid_result, eval_s, ckpt = reload_and_evaluate(
        trainer, model, ckpt_file, test_data, valid_data)

    batch = next(iter(test_data))[0]
    n = min(args.n_rows, len(batch))
    sub = batch[torch.arange(n)]
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(sub).view(n, -1).numpy().astype(np.float32)
    item_tokens = np.asarray(dataset.field2id_token["item_id"]).astype(str)
    user_tokens = np.asarray(dataset.field2id_token["user_id"]).astype(str)
    assert scores.shape[1] == dataset.item_num == len(item_tokens), (scores.shape, dataset.item_num)
    seq = sub[model.ITEM_SEQ].numpy().astype(np.int64)
    lens = sub[model.ITEM_SEQ_LEN].numpy().astype(np.int64)
    np.savez(run_dir / f"{args.model}_ref.npz", item_seq=seq, item_seq_len=lens, scores=scores,
             item_id_tokens=item_tokens, user_id=sub["user_id"].numpy(),
             user_id_tokens=user_tokens, target_item=sub["item_id"].numpy())

    results = {
        "versions": {"python": platform.python_version(), "recbole": recbole.__version__,
                     "torch": torch.__version__, "numpy": np.__version__},
        "model": args.model,
        "dataset": name,
        "dataset_dir": str(ds_dir),
        "overrides": overrides,
        "checkpoint": str(ckpt_file),
        "checkpoint_epoch": int(ckpt["epoch"]),
        "epochs_run": len(epoch_s),
        "epochs_max": args.epochs,
        "max_minutes": args.max_minutes,
        "threads": args.threads,
        "stopped_by_budget": budget["hit"],
        "data_prep_s": round(data_s, 1),
        "train_epoch_s": epoch_s,
        "valid_eval_s": valid_s,
        "fit_s_incl_valid_evals": round(fit_s, 1),
        "test_full_sort_eval_s": round(eval_s, 2),
        "best_valid_score_during_fit": float(best_valid_score),
        "valid_result": {k: float(v) for k, v in valid_result.items()},
        "test_result": {k: float(v) for k, v in test_result.items()},
        "recbole_own_reload_with_torch_load_default": own_reload,
        "n_users": int(dataset.user_num - 1),
        "n_items_incl_pad": int(dataset.item_num),
        "n_seq_rows": int(len(dataset.inter_feat)),  # every interaction but each user's first
        "n_test_rows": len(test_data._dataset),
        "params": int(sum(p.numel() for p in model.parameters())),
        "hyperparameters": {k: config[k] for k in (
            "n_layers", "n_heads", "hidden_size", "inner_size", "embedding_size",
            "hidden_dropout_prob", "attn_dropout_prob", "mask_ratio", "ft_ratio", "k_interests",
            "temperature", "dnn_type", "MAX_ITEM_LIST_LENGTH", "loss_type",
            "train_batch_size", "learning_rate") if config[k] is not None},
    }
    ids_json = json.dumps(list(item_tokens[1:])) + "\n"
    (run_dir / f"{args.model}.items.json").write_text(ids_json)  # the ONNX graph's sidecar
    # the same list beside the .pth (recshrink does not read it for a .pth yet: see README.md)
    ckpt_file.with_name(ckpt_file.stem + ".items.json").write_text(ids_json)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_onnx:
        onnx_path = run_dir / f"{args.model}.onnx"
        results["onnx"] = export_onnx(model, sub, onnx_path, int(dataset.item_num) - 1,
                                      int(config["MAX_ITEM_LIST_LENGTH"]))
    if results.get("onnx", {}).get("exporter"):
        results["onnx"]["path"] = str(onnx_path)
        results["onnx"]["check"] = check_onnx(onnx_path, seq, lens, scores)
        # the vectorised BERT4Rec step against RecBole's own loop, through torch too
        with torch.no_grad():
            wrapped = FullSort(_patched(model))(torch.from_numpy(seq), torch.from_numpy(lens))
        results["onnx"]["torch_wrapper_check_max_abs_diff"] = float(
            np.abs(wrapped.numpy() - scores).max())
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2), flush=True)
    print(f"wrote {run_dir}", file=sys.stderr)


def _patched(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).eval()
    if type(m).__name__ == "BERT4Rec":
        m.reconstruct_test_data = types.MethodType(_bert4rec_reconstruct, m)
    return m


if __name__ == "__main__":
    main()
