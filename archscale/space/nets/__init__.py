"""The built-in families' PyTorch networks, one module a family.

A family's module in :mod:`archscale.space` declares it (parameters, validation, the text
and ``model.py`` forms) without torch; its ``build_model`` imports the network from here,
so that listing and validating families (``archscale spaces``, ``archscale check``) loads
no torch.
"""
