"""The `hf-token-merge` command line."""
