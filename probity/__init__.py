"""probity: audit what neural networks compute, not only what they output."""

__version__ = "0.1.0"

# The organisms register their loaders with probity.models, so models.load("paren") works.
from probity import organisms  # noqa: E402, F401
