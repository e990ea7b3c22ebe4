"""imagegate: an OpenAI-compatible gateway for AI image edits."""

__version__ = "0.1.0"
