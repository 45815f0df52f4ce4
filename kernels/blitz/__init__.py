"""The blitz classifier on our kernels: its data (``data``), network (``net``) and side-by-side
training against torch.nn (``train``; ``python -m kernels.blitz --help``, also run as
``python -m gradcheck train``)."""
