"""Benchmark timing, roofline ceilings and goals: the logic behind ``tests/benchmarks``.

It lives beside the benchmarks, not in the ``gradcheck`` engine: it runs our kernels
(``kernels._runtime`` decides between the GPU and the Triton interpreter), which the engine never
imports. ``tests/benchmarks/conftest.py`` holds only the pytest hooks and fixtures around it.

pytest-benchmark does the bookkeeping (rounds, statistics, JSON); this module decides what one
round is and what a result is measured against.

Timing. A round is one call of the op, bracketed by CUDA events, after the L2 cache has been
flushed and with the device synchronized on the end event, so each sample is the device time of
one call (launch overhead included where the CPU is the bottleneck, as in a real training loop).
pytest-benchmark's ``pedantic`` mode runs the rounds; its timer is :func:`device_clock`, a clock
that advances only by the event-measured time, so pytest-benchmark's statistics (the median above
all) are statistics of device time, not of Python wall time. Before the rounds, warm-up calls
take JIT compilation, autotuning, cuDNN heuristics and torch.compile out of the measurement, and a
first estimate picks the number of rounds (``GRADCHECK_BENCH_SECONDS`` per benchmark, 10 to 100).

Ceilings are measured in the same run, on the same card: the copy bandwidth by a device-to-device
copy of a 1 GiB tensor, and cuBLAS (``torch.mm``) TFLOP/s at the dtype, precision and size in
question. A result's roofline time is ``max(bytes / copy bandwidth, flops / cuBLAS rate)`` for the
op's compulsory traffic and arithmetic; "% of ceiling" is roofline time over measured time.

Without CUDA the kernels run under the Triton interpreter: every benchmark then runs once, at a
tiny size, as a smoke test that keeps the benchmark code from rotting; its numbers mean nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from kernels import _runtime as rt

__all__ = [
    "COPY_BOUND",
    "CUBLAS_90",
    "CUBLAS_TF32",
    "IMPLS",
    "PASSES",
    "Bench",
    "Case",
    "Goal",
    "Session",
    "combos",
    "device_clock",
    "dtype_label",
    "load",
    "machine_info",
    "on_gpu",
    "peak_memory",
    "session",
]

#: Implementations a benchmark compares: ours against torch eager (and torch.compile where asked).
IMPLS = ("torch", "ours")
#: What is timed: the forward alone, or forward and backward (grads of every input that needs one).
PASSES = ("fwd", "fwd+bwd")

#: Seconds of measurement per benchmark on a GPU (rounds = this / one call, clamped).
TARGET_SECONDS = float(os.environ.get("GRADCHECK_BENCH_SECONDS", "0.1"))
MIN_ROUNDS, MAX_ROUNDS = 10, 100
#: Untimed calls before anything is measured: the first compiles, autotunes and picks cuDNN/cuBLAS algorithms.
WARMUP_CALLS = 2
#: Bytes zeroed before each timed call to evict the L2 (50 MiB on an H100, 60 MiB on an H200).
L2_FLUSH_BYTES = 128 << 20
#: Copy-ceiling tensor: 1 GiB, far past any cache.
COPY_BYTES = 1 << 30
#: cuBLAS size for the compute ceiling of ops that are not themselves matmuls (conv).
PEAK_MATMUL_SIZE = 4096

_DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
}


def on_gpu() -> bool:
    """True when kernels compile for CUDA (False: Triton interpreter on CPU, smoke mode)."""
    return not rt.INTERPRET


def dtype_label(dtype: torch.dtype, precision: str | None = None) -> str:
    """``fp32``, ``bf16``...; fp32 matmuls add the precision that ran: ``fp32 tf32`` or ``fp32 ieee``."""
    name = _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))
    return f"{name} {precision}" if precision else name


# ---------------------------------------------------------------------------------------------
# Goals and cases
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """A performance goal for our implementation: a fraction of the roofline and/or a speedup
    over torch eager, both measured in the same run."""

    text: str
    min_ceiling: float | None = None  # fraction of the roofline (copy bandwidth / cuBLAS rate)
    min_speedup: float | None = None  # torch eager time / our time

    def met(self, pct_ceiling: float | None, speedup: float | None) -> bool | None:
        """True/False, or None when a number it needs was not measured."""
        checks = []
        if self.min_ceiling is not None:
            checks.append(None if pct_ceiling is None else pct_ceiling >= self.min_ceiling)
        if self.min_speedup is not None:
            checks.append(None if speedup is None else speedup >= self.min_speedup)
        if any(c is False for c in checks):
            return False
        return None if any(c is None for c in checks) else True

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "min_ceiling": self.min_ceiling, "min_speedup": self.min_speedup}


#: Memory-bound kernels at large sizes: >= 85% of the copy ceiling and never slower than torch eager.
COPY_BOUND = Goal(">=85% copy, >=1x torch", min_ceiling=0.85, min_speedup=1.0)
#: matmul/linear in bf16, fp16 and fp32 IEEE: >= 90% of cuBLAS (torch eager is cuBLAS).
CUBLAS_90 = Goal(">=0.9x cuBLAS", min_speedup=0.9)
#: matmul/linear in TF32: >= 85% of cuBLAS.
CUBLAS_TF32 = Goal(">=0.85x cuBLAS", min_speedup=0.85)


def speedup_goal(factor: float, what: str = "torch") -> Goal:
    return Goal(f">={factor:g}x {what}", min_speedup=factor)


@dataclass(frozen=True)
class Case:
    """One size of one benchmark: ``gpu`` on a GPU, ``cpu`` (tiny) in the CPU smoke run.

    ``id`` names the test (``-k``-friendly), ``label`` is the size column of the table.
    ``smoke=False`` skips the case on a CPU (its tiny form would repeat another case's).
    ``compile=True`` adds a torch.compile run (GPU only). ``precision`` is the fp32 matmul
    precision ("tf32" or "ieee") that both sides run under.
    """

    id: str
    label: str
    gpu: Any
    cpu: Any
    dtype: torch.dtype = torch.float32
    goal: Goal | None = None
    smoke: bool = True
    compile: bool = False
    precision: str | None = None

    def __str__(self) -> str:
        return self.id


def combos(*axes: Sequence[Any], keep: Callable[..., bool] | None = None) -> list[Any]:
    """``pytest.param``s for the product of ``axes`` (the last varies fastest, so torch runs right
    before ours), filtered by ``keep(*values)``, with ids joined from ``str`` of each value."""
    import itertools

    return [
        pytest.param(*values, id="-".join(map(str, values)))
        for values in itertools.product(*axes)
        if keep is None or keep(*values)
    ]


def load(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported when the benchmark runs (so a broken kernel fails only the
    benchmarks that use it, not the collection of the whole folder).

    An import error or a missing name fails the benchmark, never skips it: a renamed or broken
    kernel module must not silently drop its benchmarks from the results.
    """
    mod = importlib.import_module(module)  # ImportError (or whatever the module raises) propagates
    try:
        return getattr(mod, name)
    except AttributeError:
        raise AttributeError(f"benchmark loads {module}.{name}, but {module} has no {name!r}") from None


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


class _Clock:
    now = 0.0


_CLOCK = _Clock()


def device_clock() -> float:
    """pytest-benchmark's timer: seconds of measured device time so far (advanced only by
    :func:`_timed`, so the difference around one round is that round's device time)."""
    return _CLOCK.now


_FLUSH: torch.Tensor | None = None


def _flush_l2() -> None:
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    _FLUSH.zero_()


def _timed(fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` as one timed round that advances :func:`device_clock` by its duration."""
    if not on_gpu():

        def cpu_round() -> None:
            start = time.perf_counter()
            fn()
            _CLOCK.now += time.perf_counter() - start

        return cpu_round

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def gpu_round() -> None:
        _flush_l2()
        start.record()
        fn()
        end.record()
        end.synchronize()
        _CLOCK.now += start.elapsed_time(end) * 1e-3

    return gpu_round


def _sample(fn: Callable[[], Any], rounds: int) -> list[float]:
    timed = _timed(fn)
    out = []
    for _ in range(rounds):
        before = _CLOCK.now
        timed()
        out.append(_CLOCK.now - before)
    return out


def warm_up(fn: Callable[[], Any]) -> float:
    """Call ``fn`` until compilation and tuning are done; return an estimate of one call (s)."""
    if not on_gpu():
        return 0.0
    for _ in range(WARMUP_CALLS):
        fn()
    torch.cuda.synchronize()
    return min(_sample(fn, 2))


def plan_rounds(estimate: float) -> int:
    """Rounds for a call of ``estimate`` seconds: one on a CPU (smoke), else about
    ``TARGET_SECONDS`` worth, at least 10 and at most 100."""
    if not on_gpu():
        return 1
    return max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(TARGET_SECONDS / max(estimate, 1e-7))))


def median_time(fn: Callable[[], Any]) -> float:
    """Median device time of ``fn`` (s), warmed up, outside pytest-benchmark (for ceilings)."""
    estimate = warm_up(fn)
    return statistics.median(_sample(fn, plan_rounds(estimate)))


def peak_memory(fn: Callable[[], Any]) -> int | None:
    """Bytes of device memory one call of ``fn`` holds at its peak beyond what was allocated
    before it (``torch.cuda.max_memory_allocated``), after an untimed call that takes compilation
    and autotuning (whose benchmarking allocates) out of the measure; None without CUDA."""
    if not on_gpu():
        return None
    fn()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@contextlib.contextmanager
def fp32_precision(precision: str | None) -> Iterator[None]:
    """Run fp32 matmuls and convolutions as TF32 (``"tf32"``) or IEEE (``"ieee"``) on both sides:
    torch's matmul precision (which our kernels follow) and cuDNN's TF32 switch together."""
    if precision is None:
        yield
        return
    if precision not in ("tf32", "ieee"):
        raise ValueError(f"precision must be 'tf32' or 'ieee', got {precision!r}")
    old_matmul, old_cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old_matmul)
        torch.backends.cudnn.allow_tf32 = old_cudnn


# ---------------------------------------------------------------------------------------------
# Ceilings and session state
# ---------------------------------------------------------------------------------------------


class Session:
    """What one pytest session measures once and shares: ceilings and torch's times (for speedups)."""

    def __init__(self) -> None:
        self.device = rt.device()
        self._copy_gbps: float | None = None
        self._matmul: dict[tuple[str, str | None, int, int, int], float] = {}
        self.times: dict[tuple[str, ...], dict[str, float]] = {}

    def copy_gbps(self) -> float:
        """Device-to-device copy bandwidth (GB/s, read + write counted), 1 GiB tensor on a GPU."""
        if self._copy_gbps is None:
            nbytes = COPY_BYTES if on_gpu() else 1 << 22
            src = torch.ones(nbytes // 4, dtype=torch.float32, device=self.device)
            dst = torch.empty_like(src)
            t = median_time(lambda: dst.copy_(src))
            self._copy_gbps = 2 * nbytes / t / 1e9
            del src, dst
        return self._copy_gbps

    def matmul_tflops(self, dtype: torch.dtype, precision: str | None, m: int, n: int, k: int) -> float:
        """cuBLAS (``torch.mm``) TFLOP/s for (m, k) @ (k, n) at ``dtype`` and fp32 ``precision``."""
        if not on_gpu():
            m, n, k = (min(s, 128) for s in (m, n, k))
            dtype = torch.float32  # CPU torch has no fast half matmul; a smoke number anyway
        key = (dtype_label(dtype), precision, m, n, k)
        if key not in self._matmul:
            a = torch.randn(m, k, dtype=dtype, device=self.device)
            b = torch.randn(k, n, dtype=dtype, device=self.device)
            with fp32_precision(precision if dtype == torch.float32 else None):
                t = median_time(lambda: torch.mm(a, b))
            self._matmul[key] = 2 * m * n * k / t / 1e12
        return self._matmul[key]

    def peak_tflops(self, dtype: torch.dtype, precision: str | None) -> float:
        """cuBLAS TFLOP/s at a size that fills the card: the compute roof for non-matmul ops."""
        s = PEAK_MATMUL_SIZE
        return self.matmul_tflops(dtype, precision, s, s, s)

    def ceilings(self) -> dict[str, Any]:
        return {
            "copy_gbps": self._copy_gbps,
            "matmul_tflops": {" ".join(str(p) for p in key if p is not None): v for key, v in self._matmul.items()},
        }


_SESSION: Session | None = None


def session() -> Session:
    global _SESSION
    if _SESSION is None:
        _SESSION = Session()
    return _SESSION


def machine_info() -> dict[str, Any]:
    """The card and software, for pytest-benchmark's machine_info (plus the ceilings measured)."""
    import triton

    info: dict[str, Any] = {
        "mode": "compiled (CUDA)" if on_gpu() else "Triton interpreter on CPU (smoke run)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        info.update(
            gpu=props.name,
            gpu_count=torch.cuda.device_count(),
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count,
        )
    else:
        info["gpu"] = None
    if _SESSION is not None:
        info["ceilings"] = _SESSION.ceilings()
    return info


# ---------------------------------------------------------------------------------------------
# The per-test helper behind the ``bench`` fixture
# ---------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Bench:
    """Wraps pytest-benchmark's ``benchmark`` fixture for one test: builds inputs on the kernel
    device, picks the implementation, warms up, runs the timed rounds, fills ``extra_info``."""

    def __init__(self, benchmark: Any, state: Session, jsonl: str | None = None) -> None:
        self.benchmark = benchmark
        self.session = state
        self.device = state.device
        self.gpu = on_gpu()
        self.jsonl = jsonl

    # -- inputs -------------------------------------------------------------------------------

    def size(self, case: Case) -> Any:
        """The case's sizes here: ``case.gpu`` on a GPU, ``case.cpu`` in the smoke run."""
        if not self.gpu and not case.smoke:
            pytest.skip("CPU smoke run: this case's tiny form repeats another case")
        return case.gpu if self.gpu else case.cpu

    def tensor(
        self,
        shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        *,
        grad: bool = False,
        positive: bool = False,
    ) -> torch.Tensor:
        """A random tensor on the kernel device: normal, or uniform in [0.5, 1.5) when ``positive``."""
        shape = tuple(int(s) for s in shape)
        if positive:
            t = torch.rand(shape, dtype=dtype, device=self.device).add_(0.5)
        else:
            t = torch.randn(shape, dtype=dtype, device=self.device)
        return t.requires_grad_(grad)

    def pick(self, impl: str, ours: Callable[[], Callable[..., Any]], torch_fn: Callable[..., Any]) -> Callable:
        """The callable to time: ``ours()`` (a loader, so a missing kernel skips only this impl),
        ``torch_fn`` or ``torch.compile(torch_fn)``."""
        if impl == "ours":
            return ours()
        if impl == "torch":
            return torch_fn
        if impl == "compile":
            return self.compiled(torch_fn)
        raise ValueError(f"unknown impl {impl!r}")

    def compiled(self, fn: Any) -> Any:
        """``torch.compile(fn)`` from a clean dynamo cache (no recompilation limits or dynamic
        shapes carried over from another benchmark); GPU only."""
        if not self.gpu:
            pytest.skip("torch.compile is benchmarked on a GPU only")
        try:
            import torch._dynamo

            torch._dynamo.reset()
            return torch.compile(fn, dynamic=False)
        except Exception as exc:
            pytest.skip(f"torch.compile unavailable: {type(exc).__name__}: {exc}"[:300])

    # -- running ------------------------------------------------------------------------------

    @staticmethod
    def _fwd_bwd(fn: Callable[[], Any], inputs: Sequence[torch.Tensor]) -> Callable[[], Any]:
        """A step that runs ``fn`` and the gradients of every input that requires one, with a
        fixed random upstream gradient (made here, outside the timing)."""
        wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        if not wrt:
            raise ValueError("fwd+bwd needs at least one input with requires_grad=True")
        out = fn()
        outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if o.requires_grad]
        grads = [torch.randn_like(o) for o in outs]
        del out, outs

        def step() -> None:
            out = fn()
            outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if o.requires_grad]
            torch.autograd.grad(outs, wrt, grads)

        return step

    def run(
        self,
        fn: Callable[[], Any],
        *,
        op: str,
        case: Case,
        pass_: str,
        impl: str,
        inputs: Sequence[torch.Tensor] = (),
        dtype: torch.dtype | None = None,
        bytes: int = 0,
        flops: int = 0,
        matmul_shape: tuple[int, int, int] | None = None,
        items: int | None = None,
        shape: str = "",
        goal: Goal | None = None,
    ) -> None:
        """Time ``fn`` (a closure over its inputs) for ``pass_`` ("fwd", "fwd+bwd", or "step":
        ``fn`` is the whole step) and record the result.

        ``bytes``/``flops``: the op's compulsory traffic and arithmetic for this pass (the roofline
        model); ``matmul_shape`` (m, n, k): the ceiling is cuBLAS at that very size, else at a
        size that fills the card. ``items``: things per call (images) for a throughput figure.
        """
        dtype = dtype or case.dtype
        precision = case.precision if dtype == torch.float32 else None
        label = dtype_label(dtype, precision)
        goal = case.goal if goal is None else goal
        key = (op, case.label, label, pass_)
        self.benchmark.group = f"{op} {pass_} {case.label} {label}"
        info = self.benchmark.extra_info
        info.update(op=op, case=case.label, case_id=case.id, dtype=label, pass_=pass_, impl=impl, shape=shape)
        info.update(bytes=int(bytes), flops=int(flops), smoke=not self.gpu)
        if items:
            info["items"] = int(items)
        if goal is not None and impl == "ours":
            info["goal"] = goal.as_dict()

        with fp32_precision(precision):
            if getattr(self.benchmark, "disabled", False):  # --benchmark-disable, or under xdist: run once
                (self._fwd_bwd(fn, inputs) if pass_ == "fwd+bwd" else fn)()
                return
            try:
                step = self._fwd_bwd(fn, inputs) if pass_ == "fwd+bwd" else fn
                estimate = warm_up(step)
            except Exception as exc:
                if impl == "compile":
                    pytest.skip(f"torch.compile failed: {type(exc).__name__}: {exc}"[:300])
                if _is_oom(exc):
                    torch.cuda.empty_cache()
                    pytest.skip(f"out of memory at {shape or case.label}")
                raise
            rounds = plan_rounds(estimate)
            self.benchmark.pedantic(_timed(step), rounds=rounds, warmup_rounds=0, iterations=1)  # warm already
            ceilings = self._ceilings(dtype, precision, bytes, flops, matmul_shape)

        median = self.benchmark.stats.stats.median
        times = self.session.times.setdefault(key, {})
        times[impl] = median
        info.update(time_us=median * 1e6, rounds=rounds, **ceilings)
        if bytes:
            info["gbps"] = bytes / median / 1e9
        if flops:
            info["tflops"] = flops / median / 1e12
        if items:
            info["items_per_s"] = items / median
        if ceilings.get("roofline_us"):
            info["pct_ceiling"] = ceilings["roofline_us"] * 1e-6 / median
        if impl != "torch" and "torch" in times:
            info["speedup"] = times["torch"] / median
        if impl == "ours" and "compile" in times:
            info["speedup_vs_compile"] = times["compile"] / median
        if goal is not None and impl == "ours":
            info["goal_met"] = goal.met(info.get("pct_ceiling"), info.get("speedup"))
        self._append_jsonl()

    def _ceilings(
        self,
        dtype: torch.dtype,
        precision: str | None,
        nbytes: int,
        flops: int,
        matmul_shape: tuple[int, int, int] | None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        mem_s = flop_s = 0.0
        if nbytes:
            out["copy_gbps"] = self.session.copy_gbps()
            mem_s = nbytes / (out["copy_gbps"] * 1e9)
        if flops:
            if matmul_shape is not None:
                tflops = self.session.matmul_tflops(dtype, precision, *matmul_shape)
            else:
                tflops = self.session.peak_tflops(dtype, precision)
            out["cublas_tflops"] = tflops
            flop_s = flops / (tflops * 1e12)
        if mem_s or flop_s:
            out["roofline_us"] = max(mem_s, flop_s) * 1e6
            out["bound"] = "memory" if mem_s >= flop_s else "compute"
        return out

    def _append_jsonl(self) -> None:
        """One line per finished benchmark, so a run killed before pytest-benchmark writes its JSON
        at session end still leaves results (``benchmarks.table`` reads either)."""
        if not self.jsonl:
            return
        meta = self.benchmark.stats
        record = {
            "group": self.benchmark.group,
            "name": meta.name,
            "fullname": meta.fullname,
            "param": meta.param,
            "extra_info": dict(self.benchmark.extra_info),
            "stats": {k: v for k, v in meta.stats.as_dict().items() if isinstance(v, (int, float))},
        }
        first = not os.path.exists(self.jsonl) or os.path.getsize(self.jsonl) == 0
        with open(self.jsonl, "a") as fh:
            if first:
                info = machine_info()
                # "gradcheck": the key pytest-benchmark's machine_info has it under (conftest), which
                # benchmarks.table and the committed results in benchmarks/results use
                fh.write(json.dumps({"machine_info": {"gpu": info.get("gpu"), "gradcheck": info}}) + "\n")
            fh.write(json.dumps(record, default=str) + "\n")
