"""Benchmarks of our kernels against PyTorch (the tests themselves are in ``tests/benchmarks``).

``benchmarks.harness``: timing on the device clock, roofline ceilings, goals, the ``Bench`` helper.
``benchmarks.table``: ``python -m benchmarks.table RESULTS`` renders results as a table, markdown, a plot.
``benchmarks/results/``: committed results of GPU runs.

Not part of the installed ``gradcheck`` engine, which never imports kernels or triton. Import nothing
here: ``benchmarks.table`` must stay importable without torch.
"""
