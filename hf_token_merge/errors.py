"""The library's own error type.

Every error that hf_token_merge raises on purpose for bad input is a `TokenMergeError`. It subclasses `ValueError`,
so code that already catches `ValueError` keeps working, and the CLI turns this type, `FileNotFoundError` and usage
errors into a one-line message with exit status 2. (Until every check raises this type, the CLI also reports a plain
`ValueError` that way.) Any other exception, such as a `KeyError`, is a bug and keeps its traceback.
"""

from __future__ import annotations


class TokenMergeError(ValueError):
    """Bad input or a refused operation. The message names the problem and the fix."""
