"""The version of jcsp (written into run records and model files)."""

__version__ = "0.1.0"
