"""``python -m archscale``: the ``archscale`` command."""

import sys

from archscale.cli import main

sys.exit(main())
