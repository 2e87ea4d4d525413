"""``python -m archscale``: the ``archscale`` command."""

from archscale.cli import entry

entry()
