"""The engine proves itself: every mutant of the zoo is rejected by the check meant to catch it, every twin passes.

The active Hypothesis profile decides the examples (``ci``: 10, derandomized). The rejection tests
skip Hypothesis' shrink phase unless ``GRADCHECK_ZOO_SHRINK=1``: whether a mutant is rejected, and
by which check, is settled by the first failing example, while shrinking it to a minimal one costs
hundreds of reruns per mutant (minutes for the whole zoo). ``test_failure_message_*`` shrinks, so
the minimal counterexample and its report are tested too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import gradcheck as gc
from gradcheck import profiles
from gradcheck.report import CHECKS
from tests.gradcheck.zoo import CASES, CASES_BY_NAME, Case


@pytest.fixture
def without_shrinking() -> Iterator[None]:
    """The active profile minus the shrink phase, restored afterwards."""
    if os.environ.get("GRADCHECK_ZOO_SHRINK", "") in ("1", "true", "yes"):
        yield
        return
    with profiles.without_shrinking():
        yield


def _ids(case: Case) -> str:
    return case.name


def test_zoo_is_complete() -> None:
    assert len(CASES) >= 20
    assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"
    for case in CASES:
        assert case.doc, f"{case.name}: the factory needs a docstring naming the bug class"
        assert case.mutant is not case.twin
        assert set(case.expected) <= set(CHECKS), f"{case.name}: unknown check in {case.expected}"


@pytest.mark.usefixtures("without_shrinking")
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_mutant_is_rejected(case: Case) -> None:
    with pytest.raises(gc.VerificationError) as caught:
        gc.verify(case.mutant, case.inputs, name=f"{case.name}_mutant", **case.verify_options())
    error = caught.value
    assert error.check in case.expected, (
        f"{case.name} ({case.doc}) was caught by '{error.check}', expected one of {case.expected}:\n{error}"
    )
    assert f"check '{error.check}' failed" in str(error)


#: Checks every complete example of a zoo twin runs: every case has a reference VJP and a float input.
_EVERY_EXAMPLE = ("outputs", "forward", "backward", "guards", "zero_grad", "rerun")


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_twin_passes(case: Case) -> None:
    report = gc.verify(case.twin, case.inputs, name=f"{case.name}_twin", **case.verify_options())
    assert report.failures == []
    for dtype in case.dtypes:
        cells = {s.check: s for s in report.stats if s.dtype == str(dtype).removeprefix("torch.")}
        complete = cells["rerun"].examples  # the rerun is an example's last check: it ran all the others
        assert complete > 0, f"{dtype}: no example ran to the end"
        for check in _EVERY_EXAMPLE:
            assert cells[check].examples >= complete and cells[check].skipped == 0, f"{dtype} {check}"
        # the finite differences: taken or skipped (a kink too close, an empty tensor) on every
        # complete example, taken on some; the reference's own check wherever the implementation's ran
        fd = cells["backward_fd"]
        assert fd.examples + fd.skipped == complete and fd.examples > 0, f"{dtype}: {fd}"
        assert cells["reference_fd"].examples == fd.examples, f"{dtype}: {cells['reference_fd']}"


def test_failure_message_names_op_dtype_layout_and_replay() -> None:
    """A shrunk failure report says which op, dtype and check, shows shapes and strides, and how to replay."""
    case = CASES_BY_NAME["matmul16_wrong_entry"]
    options = case.verify_options() | {"dtypes": case.dtypes[:1]}  # float32 only: one shrink is enough
    with pytest.raises(gc.VerificationError) as caught:
        gc.verify(case.mutant, case.inputs, name="matmul16_mutant", **options)
    message = str(caught.value)
    assert caught.value.op == "matmul16_mutant"
    assert caught.value.dtype == "float32"
    assert message.startswith("matmul16_mutant [float32]: check 'backward' failed")
    assert "(16, 16)" in message and "strides" in message
    assert "grad of arg0[3, 5]" in message, "the worst element is the one wrong Jacobian entry"
    assert "tolerance:" in message
    assert "replay" in message
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "@reproduce_failure(" in notes, "Hypothesis' replay line comes with the report"
