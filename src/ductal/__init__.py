"""ductal: a clinical study platform for inflammatory non-lactational breast disease."""

__version__ = "0.1.0"
