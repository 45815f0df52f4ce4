"""The catalog apart from implementations: spec files mirror kernels/, reference/ and tests/kernels/,
every op has torch's own op, and implementations are bound to op names by providers."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import gradcheck as gc
from gradcheck import ops as cat

ROOT = Path(__file__).resolve().parents[2]

#: Families in the catalog (reference, strategy, torch_fn: any implementation can be verified
#: against them) that have no kernel of ours yet. The README's table of ops says which have one.
CATALOG_ONLY = {"losses"}


@pytest.mark.parametrize("family", cat.SPEC_MODULES)
def test_each_spec_file_has_its_kernel_reference_and_test_file(family):
    assert (ROOT / f"reference/{family}.py").is_file(), f"gradcheck/specs/{family}.py has no reference/{family}.py"
    if family in CATALOG_ONLY:
        assert not (ROOT / f"kernels/{family}.py").is_file(), f"{family} has a kernel now: drop it from CATALOG_ONLY"
        return
    for path in (f"kernels/{family}.py", f"tests/kernels/test_{family}.py"):
        assert (ROOT / path).is_file(), f"gradcheck/specs/{family}.py has no {path}"


def test_the_explicit_list_names_every_spec_file():
    on_disk = {p.stem for p in (ROOT / "gradcheck" / "specs").glob("*.py") if not p.stem.startswith("_")}
    assert on_disk == set(cat.SPEC_MODULES)


def test_every_op_has_torchs_own_op_and_our_implementation():
    specs = gc.catalog()
    assert all(callable(spec.torch_fn) for spec in specs.values())
    families = {m: {s.name for s in importlib.import_module(f"gradcheck.specs.{m}").SPECS} for m in cat.SPEC_MODULES}
    catalog_only = set().union(*(families[m] for m in CATALOG_ONLY))
    assert set(gc.implementations()) == set(specs) - catalog_only


def test_our_kernels_are_found_through_the_entry_point():
    import kernels.relu
    from kernels import registry

    fn, device = cat.implementation("relu")
    assert fn is kernels.relu.relu
    assert device == registry.device()


@pytest.fixture
def no_providers(monkeypatch):
    monkeypatch.setattr(cat, "_REGISTERED", [])
    monkeypatch.setattr(cat, "_DISCOVERED", [])


def test_without_an_implementation_verify_op_says_what_to_do(no_providers):
    with pytest.raises(LookupError, match=r"no implementation is registered for 'relu': pass impl="):
        gc.verify_op("relu", dtypes=[torch.float64], max_examples=2)


def test_a_registered_implementation_is_verified_by_name(no_providers):
    calls = []

    def relu(x):
        calls.append(x.shape)
        return torch.relu(x)

    gc.register_implementations({"relu": relu}, name="mine", device=lambda: torch.device("cpu"))
    report = gc.verify_op("relu", dtypes=[torch.float64], max_examples=3)
    assert calls, "the registered implementation was not called"
    assert report.failures == []
    assert report.stat("float64", "forward").examples >= 1


def test_registering_checks_names_and_callables(no_providers):
    with pytest.raises(KeyError, match="not catalog ops: softmaxx"):
        gc.register_implementations({"softmaxx": torch.softmax})
    with pytest.raises(TypeError, match="is a int, not a callable"):
        gc.register_implementations({"relu": 3})


def test_the_latest_registration_wins(no_providers):
    first, second = torch.relu, torch.nn.functional.relu
    gc.register_implementations({"relu": first})
    gc.register_implementations({"relu": second})
    assert cat.implementation("relu")[0] is second
