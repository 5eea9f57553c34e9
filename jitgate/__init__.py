"""jitgate: just-in-time access and inspection for the reranking step of LLM pipelines."""

from __future__ import annotations

__version__ = "0.1.0"
