"""mosr: measure, understand and mitigate over-refusal of chat models."""

from mosr.errors import MosrError

__version__ = "0.1.0"
__all__ = ["MosrError", "__version__"]
