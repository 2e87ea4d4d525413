"""archscale: neural architecture and scaling search from a YAML spec."""

__version__ = "0.1.0"
