"""A crash is a verdict: run a verification in a child process that records each example before
running it, so that an implementation that kills the process (a segfault, an abort on heap
corruption, a poisoned CUDA context) fails a ``crash`` check with the input that did it, and
whatever ran before it is kept.

The child is forked (the implementation, its strategy and its reference need not be picklable).
A parent that has initialised CUDA cannot fork a child that uses it: :func:`run_isolated` says so.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import importlib
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["ExampleLog", "crash_error", "run_isolated"]


class ExampleLog:
    """Where a child writes the example it is about to run: a text description (shapes, strides,
    small values) and the drawn arguments themselves (``torch.save``), both replaced per example."""

    def __init__(self, directory: Path) -> None:
        self.text = directory / "example.txt"
        self.args = directory / "example.pt"
        self.output = directory / "output.txt"
        self.fault = directory / "fault.txt"
        self.count = 0

    def write(self, drawn: tuple, context: str) -> None:
        self.count += 1
        with contextlib.suppress(Exception):  # arguments torch cannot save: the text alone
            torch.save(drawn, self.args)
        text = f"example {self.count}:\n{context}\n"
        with open(self.text, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> str:
        try:
            return self.text.read_text()
        except OSError:
            return "(no example recorded: it died before the first example)"


def _describe_drawn(drawn: tuple) -> str:
    lines = []
    for i, a in enumerate(drawn):
        if isinstance(a, torch.Tensor):
            line = f"  arg{i}: {str(a.dtype).removeprefix('torch.')}{tuple(a.shape)} strides {a.stride()}"
            if a.numel() <= 32:
                line += f" = {a.tolist()}"
            lines.append(line)
        else:
            lines.append(f"  arg{i}: {a!r}")
    return "\n".join(lines)


def _child(conn: Any, job: Callable[[ExampleLog], Any], log: ExampleLog) -> None:
    # A forked child inherits locks other threads of the parent held at the fork: OpenMP's thread
    # team (torch's CPU ops would wait on it forever: one thread, as torch's DataLoader workers do)
    # and the locks of sys.stdout/stderr (a test runner's I/O threads): fresh streams, relayed after.
    torch.set_num_threads(1)
    sys.stdout = sys.stderr = open(log.output, "w")  # noqa: SIM115 (the child's streams until it exits)
    # where it died, for the crash report (and not on the parent's stderr)
    faulthandler.enable(file=open(log.fault, "w"))  # noqa: SIM115
    try:
        result = job(log)
        payload = ("ok", result)
    except BaseException as e:
        payload = ("raised", e)
    try:
        conn.send_bytes(pickle.dumps(payload))
    except Exception as e:  # an unpicklable result or exception: say what it was
        conn.send_bytes(pickle.dumps(("raised", RuntimeError(f"{type(payload[1]).__name__}: {payload[1]}; {e}"))))
    conn.close()
    os._exit(0)  # no atexit handlers, no second flush of the parent's buffers


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


@functools.cache
def _prewarm() -> None:
    """What every child would otherwise build again, built once in the parent before the forks:
    torch._inductor, which torch.use_deterministic_algorithms (the poisoned allocations of every
    example) imports on first use (~3-6 s), and the simulated rounding's decomposition table."""
    from gradcheck import oracle

    importlib.import_module("torch._inductor.config")
    oracle._decompositions()


def run_isolated(job: Callable[[ExampleLog], Any], *, timeout: float | None = None) -> tuple[str, Any]:
    """Run ``job(log)`` in a forked child. Returns ("ok", its result), ("raised", the exception it
    raised), or ("crashed", (how it ended, the last example it recorded, the path of its arguments))."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise RuntimeError(
            "isolate=True forks a child per verification, and this process has initialised CUDA, which a "
            "forked child cannot use: isolate before any CUDA work (the command line does), or run without it"
        )
    _prewarm()
    ctx = multiprocessing.get_context("fork")
    directory = Path(tempfile.mkdtemp(prefix="gradcheck-isolated-"))
    log = ExampleLog(directory)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, job, log), daemon=True)
    proc.start()
    send.close()
    payload = None
    timed_out = False
    try:
        if recv.poll(timeout):
            with contextlib.suppress(EOFError):
                payload = pickle.loads(recv.recv_bytes())
        else:
            timed_out = True
    finally:
        recv.close()
        proc.join(timeout=5 if payload is not None else 0.5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    with contextlib.suppress(OSError):  # what the child printed (Hypothesis' falsifying example), here
        sys.stdout.write(log.output.read_text())
    if payload is not None:
        shutil.rmtree(directory, ignore_errors=True)  # kept only after a crash: it holds the replay
        return payload
    how = f"did not finish in {timeout:.0f}s (a hang) and was killed" if timed_out else _exit_reason(proc.exitcode)
    return "crashed", (how, log.read() + _where(log), log.args)


def _where(log: ExampleLog) -> str:
    """The innermost Python frames of the crashed child (faulthandler's dump), if it wrote one."""
    try:
        frames = [ln.strip() for ln in log.fault.read_text().splitlines() if ln.strip().startswith("File ")]
    except OSError:
        return ""
    return "  where (innermost Python frames):\n" + "".join(f"    {ln}\n" for ln in frames[:4]) if frames else ""


def crash_error(name: str, dtype: str, how: str, example: str, args_path: Path) -> Any:
    """The failure of check 'crash' for a child that died while running ``example``."""
    from gradcheck.report import CHECKS, failure_class

    message = (
        f"{name} [{dtype}]: check 'crash' failed ({CHECKS['crash']})\n"
        f"  the child process running it {how} during this {example.rstrip()}\n"
        f"  replay: args = torch.load({str(args_path)!r}) (the drawn float64 arguments, before casting to "
        f"{dtype} and laying out); the verifications before this one are kept"
    )
    error = failure_class("crash")(message, op=name, dtype=dtype, check="crash", details={"how": how})
    return error


def describe_drawn(drawn: tuple) -> str:
    """The text an :class:`ExampleLog` records for a drawn example."""
    return _describe_drawn(drawn)
