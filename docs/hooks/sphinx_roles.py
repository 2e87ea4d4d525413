"""MkDocs hook: Sphinx roles in the API docstrings (``:class:`Run```, ``:func:`~archscale.run```)
shown as the code they name, so that the docstrings, also read with ``help()``, stay as they are.

mkdocstrings renders a docstring as Markdown, where ``:class:`X``` becomes the text ``:class:``
followed by the code span ``X``; this drops the role's text (and Sphinx's ``~`` prefix)."""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):<code>~?([^<]*)</code>")


def on_page_content(html: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' signature)
    return _ROLE.sub(r"<code>\1</code>", html)
