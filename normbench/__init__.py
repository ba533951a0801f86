"""normbench: train grids of small networks and see what normalization layers do inside them.

From Python (normbench/api.py): normbench.run, normbench.open_results, normbench.draw, normbench.check_claims,
normbench.load_config. Importing normbench imports none of them until one is used.
"""

from normbench.errors import UserError
from normbench.version import __version__

__all__ = ["UserError", "__version__", "check_claims", "draw", "load_config", "open_results", "run"]


def __getattr__(name: str):
    if name in __all__[2:]:
        from normbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'normbench' has no attribute {name!r}")
