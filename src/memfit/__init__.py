"""memfit: make deep-learning training fit in the memory you have."""

__version__ = "0.1.0"
