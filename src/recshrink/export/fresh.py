"""Jobs that need a process of their own, forked by one long-lived server per process.

Within one Python process only the first dynamo export of a GRU/LSTM keeps a dynamic sequence
length, so every RNN export runs in a process without an earlier export. Starting a new
interpreter for each costs its imports (torch, onnx, onnxscript: several seconds); instead a
server process imports them once, never runs a job itself, and forks one child per job.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from recshrink.errors import RecshrinkError

PRELOAD = ("torch", "onnx", "onnxscript", "torch.onnx", "recshrink.export.onnx")
_SERVER_CODE = """
import importlib, json, os, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from recshrink.export.fresh import child_main
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child_main(job)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)
"""
_servers: dict[int, subprocess.Popen] = {}  # this process's pid -> its server
_lock = threading.Lock()


def _server() -> subprocess.Popen:
    proc = _servers.get(os.getpid())  # a forked caller gets a server of its own
    if proc is None or proc.poll() is not None:
        proc = subprocess.Popen([sys.executable, "-c", _SERVER_CODE, *PRELOAD],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        _servers[os.getpid()] = proc
        atexit.register(proc.kill)
    return proc


def run_job(target: str, job: dict, tmp: Path) -> str | None:
    """Run ``target`` (``"module:function"``, called with ``job``) in a forked child.

    Args:
        target: The function the child calls with the job.
        job: JSON-serialisable arguments; paths in it may be relative to the caller's cwd.
        tmp: A private folder for the child's reply.

    Returns:
        ``None`` on success, else the failure as one line.
    """
    result = tmp / "result.txt"
    job = {**job, "target": target, "result": str(result), "cwd": os.getcwd()}
    with _lock:
        server = _server()
        server.stdin.write(json.dumps(job, default=str) + "\n")
        server.stdin.flush()
        reply = server.stdout.readline().strip()  # the child's exit code; "" if the server died
    message = result.read_text().strip() if result.exists() else ""
    if reply == "0" and not message:
        return None
    return message or f"{target} failed (exit code {reply or 'unknown: the job server stopped'})"


def child_main(job: dict) -> None:
    """In the forked child: run the job, write the error's first line if any, and exit."""
    code = 0
    try:
        with open(os.devnull, "w") as null:  # the exporter's warnings stay out of the terminal
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        os.chdir(job["cwd"])  # the server's cwd is the one it started in
        module, name = job["target"].split(":")
        getattr(importlib.import_module(module), name)(job)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line
        lines = str(exc).strip().splitlines()
        first = lines[0] if lines else type(exc).__name__
        Path(job["result"]).write_text(
            first if isinstance(exc, RecshrinkError) else f"{type(exc).__name__}: {first}")
        code = 1
    finally:
        os._exit(code)  # the server's atexit handlers and buffers must not run twice
