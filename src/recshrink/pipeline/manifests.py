"""Per-artifact manifests: what lets a re-run skip every model it already made."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from recshrink.errors import RecshrinkError
from recshrink.fsutil import write_json
from recshrink.train.config import config_json
from recshrink.version import __version__

STAGES = ("teacher", "baselines", "students", "prune", "quantize", "export", "benchmark")


class Manifests:
    """Per-artifact ``manifest.json``: the stage, a hash of its config and inputs, the recshrink
    version, its timing and its report entry. A re-run skips an artifact whose manifest matches
    (same config, same inputs); ``from_stage`` redoes that stage and every later one.
    """

    def __init__(self, data_fingerprint: str, from_stage: str | None = None,
                 protocol: dict | None = None) -> None:  # fmt: skip
        if from_stage is not None and from_stage not in STAGES:
            raise RecshrinkError(f"--from {from_stage!r}: choose one of {', '.join(STAGES)}")
        self.fingerprint = data_fingerprint
        self.protocol = protocol  # the evaluation protocol: entries hold metrics measured by it
        self.redo = set(STAGES[STAGES.index(from_stage):]) if from_stage else set()

    def key(self, stage: str, config: object, *parents: str) -> str:
        """Hash of the stage, its config (canonical JSON), the data and the parents' keys."""
        proto = [self.protocol] if self.protocol is not None else []
        blob = config_json([stage, config, self.fingerprint, __version__, *proto, *parents])
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def hit(self, stage: str, where: Path, key: str, legacy: str | None = None) -> dict | None:
        """The manifest at ``where`` if it matches ``key`` and its artifact is complete.

        A manifest written under ``legacy`` (an earlier form of the same key) matches too, and
        is rewritten under ``key`` (a one-time migration).
        """
        m = where / "manifest.json"
        if stage in self.redo or not m.is_file():
            return None
        try:
            man = json.loads(m.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if man.get("key") not in (key, legacy or key):
            return None
        if not all((where / f).exists() for f in man.get("files", [])):
            return None
        if man["key"] != key:
            write_json(m, {**man, "key": key})
        return man

    def record(self, stage: str, where: Path, key: str, seconds: float, entry: dict,
               files: tuple[str, ...] = ("config.json", "model.safetensors")) -> None:  # fmt: skip
        write_json(where / "manifest.json", {"stage": stage, "key": key, "version": __version__,
                                             "seconds": round(seconds, 2), "files": list(files),
                                             "entry": entry})  # fmt: skip
