"""postroom: a complete mail server in Python."""

__version__ = "0.1.0"
