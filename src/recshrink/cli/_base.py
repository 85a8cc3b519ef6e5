"""What every ``recshrink`` command shares: the group that turns user errors into one line and
exit code 2, output checks, and the data and training options (defaults from the config
classes).

Every user error (bad path, malformed data, invalid recipe, incompatible model) prints one line
``error: ...`` and exits with code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from pydantic import ValidationError

from recshrink.api.data import infer_format
from recshrink.errors import RecshrinkError
from recshrink.recipe import DataSpec, EvalSpec, format_validation_error, parse_value
from recshrink.train.config import TrainConfig
from recshrink.version import __version__

FORMAT_CHOICES = ["s3rec", "pairs", "recbole", "csv"]
_DATA = DataSpec()
_TRAIN = TrainConfig()


class Group(click.Group):
    """A click group that turns user errors into one line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RecshrinkError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted (finished steps are kept; re-run to resume)", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # an internal error: one line unless debugging
            if isinstance(exc, OSError) and exc.filename and not os.environ.get("RECSHRINK_DEBUG"):
                # a path the user gave cannot be read or written (permissions, disk full, ...)
                click.echo(f"error: {exc.filename}: {exc.strerror or exc}", err=True)
                sys.exit(2)
            if os.environ.get("RECSHRINK_DEBUG"):
                traceback.print_exc()
            click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)


def check_out(path: Path, kind: str) -> None:
    """Refuse an output path that cannot become a ``kind`` ("dir" or "file") before any work.

    Raises:
        RecshrinkError: ``path`` (or a parent) exists with the wrong type.
    """
    if path.exists():
        if kind == "dir" and not path.is_dir():
            raise RecshrinkError(f"{path}: exists and is not a directory")
        if kind == "file" and path.is_dir():
            raise RecshrinkError(f"{path}: is a directory, expected a file name")
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RecshrinkError(f"{path}: {parent} is not a directory")
            return


def data_options(f, format_flag: str = "--format"):
    opts = [
        click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
                     help="Interaction file (S3-Rec lines, pairs, RecBole .inter, CSV)."),
        click.option(format_flag, "fmt", type=click.Choice(FORMAT_CHOICES), default=None,
                     help="File format (default: from the extension; .inter=recbole, "
                          ".csv=csv, else s3rec)."),
        click.option("--attributes", type=click.Path(path_type=Path), default=None,
                     help="S3-Rec item2attributes.json."),
        click.option("--item-path", type=click.Path(path_type=Path), default=None,
                     help="RecBole .item file (default: next to the .inter file)."),
        click.option("--kcore", type=int, default=_DATA.kcore, show_default=True,
                     help="Drop users/items with fewer interactions."),
        click.option("--max-len", type=int, default=_DATA.max_len, show_default=True,
                     help="History length."),
        click.option("--csv-columns", default="user_id,item_id", show_default=True,
                     help="CSV columns: user,item[,time[,category]]."),
        click.option("--sep", default=",", show_default=True, help="CSV separator."),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


def data_spec(data_path, fmt, attributes, item_path, kcore, max_len, csv_columns, sep) -> DataSpec:
    """The data options as a validated :class:`recshrink.recipe.DataSpec`."""
    fmt = fmt or infer_format(data_path)
    cols = [c.strip() or None for c in csv_columns.split(",")]
    if len(cols) < 2 or len(cols) > 4 or not cols[0] or not cols[1]:
        raise RecshrinkError("--csv-columns: expected user,item[,time[,category]]")
    cols += [None] * (4 - len(cols))
    try:
        return DataSpec(
            format=fmt, path=str(data_path), root=".",
            attributes=str(attributes) if attributes else None,
            item_path=str(item_path) if item_path else None,
            kcore=kcore, max_len=max_len,
            csv={"user_col": cols[0], "item_col": cols[1], "time_col": cols[2],
                 "category_col": cols[3], "sep": sep},
        )  # fmt: skip
    except ValidationError as exc:
        raise RecshrinkError(format_validation_error(exc, "options")) from None


def print_metrics(name: str, m: dict) -> None:
    keys = ["hr@10", "ndcg@10", "hr@20", "ndcg@20", "f1@10", "mrr"]
    line = "  ".join(f"{k}={m[k]:.4f}" for k in keys if k in m)
    click.echo(f"{name}: {line}")
    for group in ("shift", "stable"):
        if group in m and m[group].get("count"):
            click.echo(f"  {group} ({m[group]['count']} users): ndcg@10={m[group]['ndcg@10']:.4f}"
                       f"  hr@10={m[group]['hr@10']:.4f}")  # fmt: skip




def load_data_options(kw: dict):
    """The data set and its leave-one-out split from the data options."""
    spec = data_spec(**kw)
    data = spec.load()
    return data, data.split(spec.max_len, spec.shift_window)


def train_options(f):
    """Training options (defaults: :class:`recshrink.train.TrainConfig`'s)."""
    t = _TRAIN
    opts = [
        click.option("--arg", "args", multiple=True,
                     help="Builder argument KEY=VALUE (repeatable), e.g. --arg dim=128."),
        click.option("--epochs", type=int, default=t.epochs, show_default=True),
        click.option("--batch-size", type=int, default=t.batch_size, show_default=True),
        click.option("--lr", type=float, default=t.lr, show_default=True),
        click.option("--weight-decay", type=float, default=t.weight_decay, show_default=True),
        click.option("--loss", type=click.Choice(["ce", "sampled", "bce"]), default=t.loss,
                     show_default=True),
        click.option("--negatives", "num_negatives", type=int, default=t.num_negatives,
                     show_default=True, help="Shared negatives for the sampled softmax."),
        click.option("--patience", type=int, default=t.patience, show_default=True),
        click.option("--seed", type=int, default=t.seed, show_default=True),
        click.option("--device", default=t.device, show_default=True),
        click.option("--threads", type=int, default=t.threads),
        click.option("--max-minutes", type=float, default=t.max_minutes,
                     help="Training time budget."),
        click.option("--lr-decay", type=float, default=t.lr_decay, show_default=True,
                     help="Multiply the learning rate by this on a validation plateau (1 = off)."),
        click.option("--lr-patience", type=int, default=t.lr_patience, show_default=True,
                     help="Evaluations without improvement before each lr decay."),
        click.option("--min-lr", type=float, default=t.min_lr, show_default=True,
                     help="No lr decay goes below this rate."),
        click.option("--progress/--no-progress", default=True),
    ]  # fmt: skip
    for opt in reversed(opts):
        f = opt(f)
    return f


def key_values(items: tuple[str, ...], flag: str) -> dict:
    """``KEY=VALUE`` options as a dict (values parsed like recipe values)."""
    out = {}
    for a in items:
        if "=" not in a:
            raise RecshrinkError(f"{flag} {a!r}: expected KEY=VALUE")
        k, v = a.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def validated(build):
    """``build()``, a config from options; a validation error names the option, exit 2."""
    try:
        return build()
    except ValidationError as exc:
        raise RecshrinkError(format_validation_error(exc, "options")) from None


def protocol_options(f):
    """``--ties`` and ``--mask-scope``: the ranking protocol (defaults from EvalSpec)."""
    ev = EvalSpec()
    f = click.option("--mask-scope", type=click.Choice(["full", "window"]), default=ev.mask_scope,
                     show_default=True, help="Mask every item before the target (full) or only "
                     "the model's last max_len items (window).")(f)  # fmt: skip
    return click.option("--ties", type=click.Choice(["pessimistic", "expected"]), default=ev.ties,
                        show_default=True, help="A tied target ranks behind its ties "
                        "(pessimistic) or at the expected rank of random tie-breaking.")(f)  # fmt: skip


@click.group(cls=Group)
@click.version_option(__version__, prog_name="recshrink")
def main() -> None:
    """recshrink: compress large sequential interest models into small, fast recommenders."""
