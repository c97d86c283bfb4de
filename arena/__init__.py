"""Arena: judge language models by anonymous, side-by-side human votes."""

__version__ = "0.1.0"
