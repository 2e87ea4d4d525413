"""The built-in families' PyTorch networks, one module a family.

A family's module in :mod:`archscale.space` declares it (parameters, validation, the text
form) without torch; its ``build_model`` imports the network from here, and its
``model_source`` the function here that writes the network as plain PyTorch (the ``model.py``
of an export, :mod:`space.source`), so that listing and validating families (``archscale
spaces``, ``archscale check``) loads no torch. A network module imports torch, the building
blocks (:mod:`space.blocks`, :mod:`space.source`) and the layout it shares with its family
(:mod:`space.layouts`, :mod:`space.scaling`), never the family.
"""
