"""Speech-token selections of known speech-LLM families.

Each preset is the regex that names the family's discrete speech tokens in its tokenizer. The recipes in
`recipes/` build on these and add the merge settings that suit each family. They live in the config layer because
`TokenMergeConfig` validates `preset` names against them; `hf_token_merge.selection` resolves them and re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """A named speech-token selection.

    Attributes:
        pattern: Regex matched in full against token strings.
        description: Where the tokens come from.
    """

    pattern: str
    description: str


PRESETS: dict[str, Preset] = {
    "llasa": Preset(r"<\|s_\d+\|>", "Llasa: 65,536 X-codec2 codes <|s_N|> after the Llama-3 text vocabulary."),
    "orpheus": Preset(r"<custom_token_\d+>", "Orpheus: SNAC codes <custom_token_N>, 7 position blocks of 4,096."),
    "spark_tts": Preset(r"<\|bicodec_semantic_\d+\|>", "Spark-TTS: BiCodec semantic tokens."),
    "spark_tts_global": Preset(r"<\|bicodec_global_\d+\|>", "Spark-TTS: BiCodec global (speaker) tokens."),
    "outetts": Preset(r"<\|c[12]_\d+\|>", "OuteTTS 1.0: DAC codebook tokens <|c1_N|> and <|c2_N|>."),
    "outetts_v02": Preset(r"<\|\d+\|>", "OuteTTS 0.2/0.3: WavTokenizer codes <|N|> (0..4099)."),
    "spiritlm": Preset(r"\[Hu\d+\]", "SpiritLM: HuBERT units [HuN]."),
    "spiritlm_pitch": Preset(r"\[Pi\d+\]", "SpiritLM Expressive: pitch tokens [PiN]."),
    "spiritlm_style": Preset(r"\[St\d+\]", "SpiritLM Expressive: style tokens [StN]."),
    "speechgpt": Preset(r"<\d+>", "SpeechGPT: HuBERT units <N>."),
    "glm4_voice": Preset(r"<\|audio_\d+\|>", "GLM-4-Voice: speech tokens <|audio_N|>."),
    "reference": Preset(r"<\|s_\d+\|>", "The bundled reference speech-LLM: k-means units <|s_N|>."),
}
