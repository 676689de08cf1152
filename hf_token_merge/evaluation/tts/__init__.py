"""TTS evaluation: family adapters between generated ids and codec codes (`adapters`)."""

from hf_token_merge.evaluation.tts.adapters import (
    ADAPTERS,
    InvalidSpeechTokenError,
    LlasaAdapter,
    OrpheusAdapter,
    OuteTTSAdapter,
    SparkTTSAdapter,
    SpeechCodes,
    SpeechTokenAdapter,
    UnitAdapter,
    adapter_for,
)

__all__ = [
    "ADAPTERS",
    "InvalidSpeechTokenError",
    "LlasaAdapter",
    "OrpheusAdapter",
    "OuteTTSAdapter",
    "SparkTTSAdapter",
    "SpeechCodes",
    "SpeechTokenAdapter",
    "UnitAdapter",
    "adapter_for",
]
