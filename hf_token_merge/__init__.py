"""hf_token_merge: merge near-duplicate token rows of Hugging Face speech-LLMs in place."""

__version__ = "0.1.0.dev0"
