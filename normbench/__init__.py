"""normbench: train grids of small networks and see what normalization layers do inside them."""

__version__ = "0.2.0"
