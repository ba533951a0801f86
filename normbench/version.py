"""The package's version, in a module of its own: every module can import it without importing the package's
facade (normbench/__init__.py)."""

__version__ = "0.2.0"
