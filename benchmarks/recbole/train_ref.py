"""Train RecBole's own SASRec / GRU4Rec on ML-100K and dump reference numbers and fixtures.

Runs in the separate RecBole env (benchmarks/recbole/setup.sh), never in recshrink's venv:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 benchmarks/recbole/.venv/bin/python \\
        benchmarks/recbole/train_ref.py --epochs 5

Writes under benchmarks/recbole/out/ (git-ignored):
  data/ml-100k/ml-100k.inter      copy of ../shared/data/ml-100k/ml-100k.inter (RecBole's data_path)
  checkpoints/<Model>-<time>.pth  RecBole's own Trainer checkpoint (best valid NDCG@10)
  results.json                    RecBole's valid/test metrics per checkpoint, epoch timings,
                                  versions, protocol checks
  <Model>_ref.npz                 fixture: 200 test users' item_seq / item_seq_len as RecBole feeds
                                  them, full_sort_predict scores [200, n_items] (eval mode, raw:
                                  column 0 = [PAD] NOT masked), item_id_tokens (index -> token)
  log/, log_tensorboard/          RecBole's own logs (it writes them relative to the cwd)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "ml-100k"


def recbole_config(model: str, data_path: Path, ckpt_dir: Path, epochs: int, seed: int) -> dict:
    return {
        "model": model,
        "dataset": "ml-100k",
        "data_path": str(data_path),
        "checkpoint_dir": str(ckpt_dir),
        # atomic-file columns (RecBole's bundled ml-100k.yaml also loads only these)
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50,
        # protocol
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["NDCG", "Hit"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "loss_type": "CE",
        "train_neg_sample_args": None,
        # training
        "epochs": epochs,
        "train_batch_size": 2048,
        "eval_batch_size": 4096,
        "learning_rate": 0.001,
        "stopping_step": 10,
        "seed": seed,
        "reproducibility": True,
        # CPU only
        "device": "cpu",
        "gpu_id": "",
        "use_gpu": False,
        "worker": 0,
        "show_progress": False,
        "log_wandb": False,
        "state": "INFO",
    }


def protocol_checks(src_inter: Path, dataset, test_ds, valid_ds) -> dict:
    """Rebuild RecBole's leave-one-out split with pandas from the raw file and compare."""
    raw = pd.read_csv(src_inter, sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    raw["row"] = np.arange(len(raw))
    tok2id = dataset.field2token_id["item_id"]
    utok2id = dataset.field2token_id["user_id"]
    raw["iid"] = raw["item_id"].astype(str).map(tok2id)
    raw["uid"] = raw["user_id"].astype(str).map(utok2id)
    ts = raw["timestamp"].to_numpy(np.float64)
    # RecBole min-max normalises every float field (normalize_all: True) and stores it as float32
    raw["ts32"] = torch.FloatTensor((ts - ts.min()) / (ts.max() - ts.min())).numpy()

    def targets(sort_cols):
        s = raw.sort_values(["uid"] + sort_cols, kind="stable")
        g = s.groupby("uid", sort=True)["iid"]
        return g.nth(-1).to_numpy(), g.nth(-2).to_numpy(), s

    rb_test = dict(zip(test_ds.inter_feat["user_id"].numpy(), test_ds.inter_feat["item_id"].numpy()))
    rb_valid = dict(zip(valid_ds.inter_feat["user_id"].numpy(), valid_ds.inter_feat["item_id"].numpy()))
    users = np.array(sorted(rb_test))
    rb_t = np.array([rb_test[u] for u in users])
    rb_v = np.array([rb_valid[u] for u in users])
    out = {}
    for name, cols in {
        "raw_int_ts_then_file_order": ["timestamp", "row"],
        "float32_normalised_ts_then_file_order": ["ts32", "row"],
    }.items():
        t, v, _ = targets(cols)
        out[name] = {
            "test_target_mismatch_users": int((t != rb_t).sum()),
            "valid_target_mismatch_users": int((v != rb_v).sum()),
        }
    # distinct raw timestamps that collapse to one float32 value within a user
    s = raw.sort_values(["uid", "timestamp"], kind="stable")
    same_user = s["uid"].to_numpy()[1:] == s["uid"].to_numpy()[:-1]
    raw_diff = np.diff(s["timestamp"].to_numpy()) != 0
    f32_same = np.diff(s["ts32"].to_numpy()) == 0
    out["adjacent_pairs_raw_distinct_but_float32_equal"] = int((same_user & raw_diff & f32_same).sum())
    out["adjacent_pairs_raw_equal_ts"] = int((same_user & ~raw_diff).sum())
    # full test histories: RecBole's item_seq vs pandas (float32 ts, file order), last 50
    _, _, s32 = targets(["ts32", "row"])
    hist = {u: g.to_numpy()[:-1][-50:] for u, g in s32.groupby("uid")["iid"]}
    seqs = test_ds.inter_feat["item_id_list"].numpy()
    lens = test_ds.inter_feat["item_length"].numpy()
    mism = sum(
        not np.array_equal(seqs[k, : lens[k]], hist[u])
        for k, u in enumerate(test_ds.inter_feat["user_id"].numpy())
    )
    out["test_item_seq_mismatch_users_vs_float32_ts_file_order"] = int(mism)
    out["item_seq_right_padded_with_0"] = bool(
        all((seqs[k, lens[k]:] == 0).all() for k in range(len(lens)))
    )
    return out


def stop_after(minutes: float | None, t0: float) -> dict:
    """Make RecBole's trainers stop at the first validation past ``minutes`` after ``t0`` (the
    kept checkpoint is still the best on validation), by wrapping RecBole's ``early_stopping``.

    Returns:
        ``{"hit": bool}``, set once the budget stopped the fit.
    """
    import recbole.trainer.trainer as rb_trainer

    budget = {"hit": False}
    own = getattr(rb_trainer.early_stopping, "recbole_own", rb_trainer.early_stopping)

    def budget_stopping(*a, **k):
        best, cur, stop, update = own(*a, **k)
        if minutes is not None and (time.perf_counter() - t0) / 60 > minutes:
            budget["hit"] = stop = True
        return best, cur, stop, update

    budget_stopping.recbole_own = own
    rb_trainer.early_stopping = budget_stopping
    return budget


def reload_and_evaluate(trainer, model, ckpt_file: Path, test_data, valid_data):
    """RecBole's own reload of its checkpoint (expected to fail: torch>=2.6 defaults
    torch.load(weights_only=True) and the file pickles RecBole's Config), then the checkpoint
    loaded trusting it (this script just wrote it) and evaluated in memory.

    Returns:
        ``(own_reload, test_result, valid_result, test_eval_seconds, checkpoint)``.
    """
    try:
        trainer.evaluate(test_data, load_best_model=True)
        own_reload = "ok"
    except Exception as e:  # noqa: BLE001
        own_reload = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    model.load_other_parameter(ckpt.get("other_parameter"))
    t1 = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=False)
    eval_s = time.perf_counter() - t1
    valid_result = trainer.evaluate(valid_data, load_best_model=False)
    return own_reload, test_result, valid_result, eval_s, ckpt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["SASRec", "GRU4Rec"])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder with ml-100k.inter")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--n-users", type=int, default=200, help="test users in each fixture")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--eval-only", type=Path, default=None, metavar="PTH",
                    help="no training: evaluate this checkpoint of the (one) --models model, "
                         "written by an earlier run of this script, and write its results")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop after the first validation past this many minutes of fit "
                         "(the kept checkpoint is still the best on validation)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    out = args.out.resolve()
    if args.eval_only is not None:
        args.eval_only = args.eval_only.resolve()  # before the chdir below
    src_inter = (args.src / "ml-100k.inter").resolve()
    data_path = out / "data"
    (data_path / "ml-100k").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_inter, data_path / "ml-100k" / "ml-100k.inter")
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # RecBole writes log/ and log_tensorboard/ relative to the cwd

    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results["versions"] = {
        "python": platform.python_version(),
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    results.setdefault("models", {})

    for name in args.models:
        config = Config(
            model=name,
            dataset="ml-100k",
            config_dict=recbole_config(name, data_path, ckpt_dir, args.epochs, args.seed),
        )
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        torch.set_num_threads(1)
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

        epoch_s: list[float] = []
        orig_train_epoch = trainer._train_epoch

        def timed_train_epoch(*a, _orig=orig_train_epoch, **k):
            t0 = time.perf_counter()
            r = _orig(*a, **k)
            epoch_s.append(round(time.perf_counter() - t0, 2))
            return r

        trainer._train_epoch = timed_train_epoch
        t0 = time.perf_counter()
        budget = stop_after(args.max_minutes, t0)
        if args.eval_only is not None:  # the run that trained it saved the file; nothing to fit
            trainer.saved_model_file = str(args.eval_only)
        best_valid_score, best_valid_result = (None, None) if args.eval_only else trainer.fit(
            train_data, valid_data, saved=True, show_progress=False
        )
        fit_s = time.perf_counter() - t0
        ckpt_file = Path(trainer.saved_model_file)

        own_reload, test_result, valid_result, eval_s, ckpt = reload_and_evaluate(
            trainer, model, ckpt_file, test_data, valid_data)

        # fixture: the first n test users exactly as the full-sort test loader feeds them
        batch = next(iter(test_data))[0]
        n = min(args.n_users, len(batch))
        sub = batch[torch.arange(n)]
        model.eval()
        with torch.no_grad():
            scores = model.full_sort_predict(sub).view(n, -1)
        item_tokens = np.asarray(dataset.field2id_token["item_id"]).astype(str)
        user_tokens = np.asarray(dataset.field2id_token["user_id"]).astype(str)
        assert scores.shape[1] == dataset.item_num == len(item_tokens)
        fixture = out / f"{name}_ref.npz"
        np.savez(
            fixture,
            item_seq=sub[model.ITEM_SEQ].numpy(),
            item_seq_len=sub[model.ITEM_SEQ_LEN].numpy(),
            scores=scores.numpy().astype(np.float32),
            item_id_tokens=item_tokens,
            user_id=sub["user_id"].numpy(),
            user_id_tokens=user_tokens,
            target_item=sub["item_id"].numpy(),
        )

        results["models"][name] = {
            "checkpoint": os.path.relpath(ckpt_file, REPO),
            "checkpoint_epoch": int(ckpt["epoch"]),
            "checkpoint_keys": sorted(ckpt.keys()),
            "fixture": os.path.relpath(fixture, REPO),
            "epochs": args.epochs,
            "epochs_run": None if args.eval_only else len(epoch_s),  # eval-only: see the log
            "max_minutes": args.max_minutes,
            "stopped_by_budget": budget["hit"],
            "train_epoch_s": epoch_s,
            "fit_s_incl_valid_evals": round(fit_s, 1),
            "test_full_sort_eval_s": round(eval_s, 2),
            "best_valid_score_during_fit": (float(ckpt["best_valid_score"]) if args.eval_only
                                            else float(best_valid_score)),
            "eval_only": args.eval_only is not None,
            "valid_result": {k: float(v) for k, v in valid_result.items()},
            "test_result": {k: float(v) for k, v in test_result.items()},
            "recbole_own_reload_with_torch_load_default": own_reload,
            "n_users": int(dataset.user_num - 1),
            "n_items_incl_pad": int(dataset.item_num),
            "n_test_rows": len(test_data._dataset),
            "params": int(sum(p.numel() for p in model.parameters())),
        }
        if "protocol_checks" not in results:
            results["protocol_checks"] = protocol_checks(
                src_inter, dataset, test_data._dataset, valid_data._dataset
            )
        results_file.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(results["models"][name], indent=2), flush=True)

    print(json.dumps(results.get("protocol_checks"), indent=2))
    print(f"wrote {results_file}", file=sys.stderr)


if __name__ == "__main__":
    main()
