"""Fixtures of the fault-injection suite (defined in faultkit.py, which the tests also import)."""

from faultkit import small_fs, texts_csv, tiny_gguf, tiny_gguf_source  # noqa: F401 -- pytest fixtures
