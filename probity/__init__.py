"""probity: audit what neural networks compute, not only what they output."""

__version__ = "0.1.0"
