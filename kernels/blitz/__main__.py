"""``python -m kernels.blitz``: train the blitz classifier (see ``kernels.blitz.train``)."""

from kernels.blitz.train import main

raise SystemExit(main())
