"""``python -m rvmpq`` is the ``rvmpq`` command."""

import sys

from rvmpq.sw.cli import main

sys.exit(main())
