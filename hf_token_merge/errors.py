"""The library's own error type.

Every error that hf_token_merge raises on purpose for bad input is a `TokenMergeError`. It subclasses `ValueError`,
so code that already catches `ValueError` keeps working, and the CLI turns this type, `FileNotFoundError` (a missing
input file or folder) and usage errors into a one-line message with exit status 2. Any other exception, a plain
`ValueError` or `KeyError` included, is a bug and keeps its traceback.
"""

from __future__ import annotations


class TokenMergeError(ValueError):
    """Bad input or a refused operation. The message names the problem and the fix."""
