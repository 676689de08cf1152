"""Audio decoding and resampling for the evaluator (defined with the speech assets in `reference.audio`)."""

from hf_token_merge.reference.audio import TARGET_SAMPLING_RATE, decode_audio_value, resample

__all__ = ["TARGET_SAMPLING_RATE", "decode_audio_value", "resample"]
