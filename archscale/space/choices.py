"""The layer kinds a family's parameters choose from, named without importing torch.

Declaring and validating a family (``archscale spaces``, ``archscale check``, a spec's
``space`` section) needs the names only; :mod:`space.blocks` makes the layers they name
when a model is built (and an export copies their source into its ``model.py``).
"""

# activation name -> the torch.nn class it makes
ACTIVATION_LAYERS: dict[str, str] = {
    "relu": "ReLU",
    "celu": "CELU",
    "gelu": "GELU",
    "silu": "SiLU",
}
NORMS = ("batch", "ghost", "group", "layer", "none")
