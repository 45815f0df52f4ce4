"""A torch bug the catalog's attention strategy finds (torch 2.13, CPU): scaled_dot_product_attention
returns wrong values for a query expanded along T (stride 0) whose size-1 head dim has stride 1,
at every dtype. ``verify_op("scaled_dot_product_attention", impl=torch_fn)`` passes the ci
profile's 10 examples but failed at float32 and float64 within 150 (check 'forward': NaN where the
reference is finite, since the engine fills fresh memory with NaN; without that fill, wrong finite
values); the fp16 and bf16 runs did not draw that layout in 150."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradcheck.tolerances import assert_close


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_torch_cpu_sdpa_expanded_query_with_unit_stride_heads(dtype):
    """Minimal case: q (1, 1, 2, 2) with strides (2, 1, 0, 1), two equal query rows. torch's CPU
    flash kernel (``_scaled_dot_product_flash_attention_for_cpu``) allocates its output with strides
    (4, 1, 1, 2) (T and D swapped) and fills it wrongly; the math backend is right. When this test
    fails, torch is fixed."""
    torch.manual_seed(0)
    q = torch.randn(2, dtype=torch.float64).to(dtype).as_strided((1, 1, 2, 2), (2, 1, 0, 1))
    k, v = (
        torch.randn(1, 1, 2, 2, dtype=torch.float64).to(dtype),
        torch.randn(1, 1, 2, 2, dtype=torch.float64).to(dtype),
    )
    right = torch.ops.aten._scaled_dot_product_attention_math(q.contiguous().double(), k.double(), v.double())[0]
    # the contiguous path is right
    assert_close(F.scaled_dot_product_attention(q.contiguous(), k, v), right, depth=2, ulps=4)
    out = F.scaled_dot_product_attention(q, k, v)
    assert out.stride() == (4, 1, 1, 2)
    # wrong far past rounding (by how much varies from run to run: measured 0.0985 to over 0.1)
    with pytest.raises(AssertionError):
        assert_close(out, right, depth=2, ulps=4, msg="torch's CPU SDPA is right on this layout now: its bug is fixed")
