"""The atomic folder write, importable from here as documented (defined in `hf_token_merge.atomic`, below the config
and remap layers that save through it)."""

from hf_token_merge.atomic import MARKER_NAME, atomic_directory, check_target, is_library_folder

__all__ = ["MARKER_NAME", "atomic_directory", "check_target", "is_library_folder"]
