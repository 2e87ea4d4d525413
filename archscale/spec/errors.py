"""The error of invalid input, in a module that imports nothing, so that the command line can
name it before it has loaded torch, pydantic or anything else."""


class SpecError(ValueError):
    """An invalid spec or argument: one line naming the field, the value and what is allowed."""
