"""The built-in families' PyTorch networks, one module a family.

A family's module in :mod:`archscale.space` declares it (parameters, validation, the text
form) without torch; its ``network`` imports the network class from here and names its
constructor's arguments (:class:`space.registry.Network`), so that listing and validating
families (``archscale spaces``, ``archscale check``) loads no torch. An export's ``model.py``
carries these classes' own source (:mod:`analysis.standalone`): there is no second copy. A
network module imports torch, the building blocks (:mod:`space.blocks`) and the layout it
shares with its family (:mod:`space.layouts`, :mod:`space.scaling`), never the family.
"""
