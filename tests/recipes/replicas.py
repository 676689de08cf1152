"""Tiny local replicas of the recipe families: the recipe's architecture class and tie setting, the family's
token naming and layout, random weights, hidden size 32, and a real fast tokenizer (`tests.models.build_tokenizer`).

Orpheus, OuteTTS, Spark-TTS and Whisper are built at the **real** vocabulary layout (7 x 4,096 Orpheus codes,
2 x 1,024 DAC codes, 8,192 + 4,096 BiCodec tokens, Whisper's 51,864 ids): their recipes depend on block sizes
(`partition_size`, id ranges), and at hidden size 32 the real layout is cheap. The other families are scaled down
(fewer units, same names), which their recipes do not depend on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import transformers
from tokenizers import AddedToken, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from torch import nn
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast, WhisperForConditionalGeneration

from tests.models import HIDDEN, TEXT_WORDS, build_tokenizer, llasa_tokenizer, tiny_whisper_config


@dataclass
class Replica:
    """A replica model with what its recipe must select.

    Attributes:
        model: The model, in eval mode.
        tokenizer: Its fast tokenizer.
        intended: Sorted ids the recipe must select, exactly.
        groups: Id groups that no cluster may mix (Orpheus positions, OuteTTS codebooks, Spark families).
        kept: Control/special ids that must stay out of the selection.
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerFast
    intended: list[int]
    groups: list[list[int]] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)


def _ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert tokenizer.unk_token_id not in ids, "replica token missing from its tokenizer"
    return ids


def causal_lm(architecture: str, tokenizer, *, tied: bool, seed: int = 0) -> nn.Module:
    """A one-layer `architecture` (a transformers class name) sized for `tokenizer`, random weights."""
    model_class = getattr(transformers, architecture)
    config = model_class.config_class(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HIDDEN // 4,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return model_class(config).eval()


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


def _llama3_tokenizer(added: list[str]) -> PreTrainedTokenizerFast:
    return build_tokenizer(
        TEXT_WORDS, LLAMA3_SPECIALS, added, [], bos="<|begin_of_text|>", eos="<|end_of_text|>", pad="<|eot_id|>"
    )


def llasa(architecture: str, tied: bool) -> Replica:
    """Llama-3 style vocabulary, the Llasa markers, 48 `<|s_N|>` codes (scaled from 65,536), reserved specials."""
    tokenizer = llasa_tokenizer(48)
    codes = _ids(tokenizer, [f"<|s_{i}|>" for i in range(48)])
    kept = _ids(tokenizer, ["<|SPEECH_GENERATION_START|>", "<|SPEECH_GENERATION_END|>", "<|reserved_0|>"])
    return Replica(causal_lm(architecture, tokenizer, tied=tied), tokenizer, codes, kept=kept)


ORPHEUS_CONTROL = 10
ORPHEUS_POSITIONS = 7
ORPHEUS_CODES = 4096
ORPHEUS_TRAILING = 2  # <custom_token_28682>, <custom_token_28683>: in the vocabulary, not codes


def orpheus(architecture: str, tied: bool) -> Replica:
    """Real Orpheus layout: <custom_token_0..9> control, 7 x 4,096 codes, two trailing custom tokens."""
    total = ORPHEUS_CONTROL + ORPHEUS_POSITIONS * ORPHEUS_CODES + ORPHEUS_TRAILING
    tokenizer = _llama3_tokenizer([f"<custom_token_{n}>" for n in range(total)])
    first = tokenizer.convert_tokens_to_ids("<custom_token_0>")
    code_id = first + ORPHEUS_CONTROL  # id of <custom_token_10> (128266 in Orpheus)
    groups = [
        list(range(code_id + p * ORPHEUS_CODES, code_id + (p + 1) * ORPHEUS_CODES)) for p in range(ORPHEUS_POSITIONS)
    ]
    kept = list(range(first, code_id)) + list(range(code_id + ORPHEUS_POSITIONS * ORPHEUS_CODES, first + total))
    intended = [i for group in groups for i in group]
    return Replica(causal_lm(architecture, tokenizer, tied=tied), tokenizer, intended, groups, kept)


SPARK_CONTROL = [
    "<|task_tts|>",
    "<|start_content|>",
    "<|end_content|>",
    "<|start_global_token|>",
    "<|end_global_token|>",
    "<|start_semantic_token|>",
    "<|end_semantic_token|>",
]


def spark_tts(architecture: str, tied: bool, *, global_first: bool = False) -> Replica:
    """Real Spark-TTS code counts: 8,192 semantic and 4,096 global tokens (order selectable), control tokens."""
    semantic = [f"<|bicodec_semantic_{i}|>" for i in range(8192)]
    global_ = [f"<|bicodec_global_{i}|>" for i in range(4096)]
    blocks = [global_, SPARK_CONTROL, semantic] if global_first else [semantic, SPARK_CONTROL, global_]
    tokenizer = build_tokenizer(
        TEXT_WORDS,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        [token for block in blocks for token in block],
        [],
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    groups = [_ids(tokenizer, semantic), _ids(tokenizer, global_)]
    return Replica(
        causal_lm(architecture, tokenizer, tied=tied), tokenizer, groups[0], groups, _ids(tokenizer, SPARK_CONTROL)
    )


OUTETTS_MARKERS = ["<|audio_start|>", "<|audio_end|>", "<|text_start|>", "<|text_end|>", "<|word_start|>"]
OUTETTS_FEATURES = ["<|word_end|>", "<|features|>", "<|code|>", "<|t_0.12|>", "<|energy_3|>", "<|pitch_7|>"]


def outetts(architecture: str, tied: bool, *, slots: int = 1024) -> Replica:
    """Real OuteTTS 1.0 layout: markers, <|c1_0..|> then <|c2_0..|> (`slots` per codebook), feature tokens."""
    c1 = [f"<|c1_{i}|>" for i in range(slots)]
    c2 = [f"<|c2_{i}|>" for i in range(slots)]
    tokenizer = _llama3_tokenizer(OUTETTS_MARKERS + c1 + c2 + OUTETTS_FEATURES)
    groups = [_ids(tokenizer, c1[:1024]), _ids(tokenizer, c2[:1024])]
    kept = _ids(tokenizer, OUTETTS_MARKERS + OUTETTS_FEATURES + c1[1024:] + c2[1024:])
    return Replica(causal_lm(architecture, tokenizer, tied=tied), tokenizer, groups[0] + groups[1], groups, kept)


OUTETTS_V02_CODES = 4100
OUTETTS_V02_MARKERS = ["<|text_start|>", "<|text_end|>", "<|audio_start|>", "<|audio_end|>", "<|code_start|>"]
OUTETTS_V02_FEATURES = ["<|code_end|>", "<|t_0.12|>", "<|t_1.05|>", "<|space|>"]


def outetts_v02(architecture: str, tied: bool) -> Replica:
    """Real OuteTTS 0.2/0.3 code count: Qwen-style specials, markers, <|0|>..<|4099|>, duration tokens."""
    codes = [f"<|{i}|>" for i in range(OUTETTS_V02_CODES)]
    tokenizer = build_tokenizer(
        TEXT_WORDS,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        OUTETTS_V02_MARKERS + codes + OUTETTS_V02_FEATURES,
        [],
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    kept = _ids(tokenizer, OUTETTS_V02_MARKERS + OUTETTS_V02_FEATURES)
    return Replica(causal_lm(architecture, tokenizer, tied=tied), tokenizer, _ids(tokenizer, codes), kept=kept)


def spiritlm(architecture: str, tied: bool, *, selects: str = "Hu") -> Replica:
    """Llama-2 style vocabulary, then Spirit LM's markers [Text] and [Speech] (before the units, as in Spirit LM),
    40 [HuN] (scaled from 501), 8 [PiN] (64), 10 [StN] (100)."""
    units = {"Hu": 40, "Pi": 8, "St": 10}
    names = {kind: [f"[{kind}{i}]" for i in range(n)] for kind, n in units.items()}
    tokenizer = build_tokenizer(
        TEXT_WORDS,
        ["<s>", "</s>"],
        ["[Text]", "[Speech]"] + names["Hu"] + names["Pi"] + names["St"],
        [],
        bos="<s>",
        eos="</s>",
        pad="</s>",
    )
    groups = [_ids(tokenizer, names[kind]) for kind in units]
    kept = _ids(tokenizer, ["[Text]", "[Speech]"]) + [
        i for kind in units if kind != selects for i in _ids(tokenizer, names[kind])
    ]
    return Replica(
        causal_lm(architecture, tokenizer, tied=tied), tokenizer, _ids(tokenizer, names[selects]), groups, kept
    )


def speechgpt(architecture: str, tied: bool) -> Replica:
    """LLaMA style vocabulary with byte tokens <0xNN>, 40 units <N> (scaled from 1,000), <sosp>, <eosp>."""
    units = [f"<{i}>" for i in range(40)]
    tokenizer = build_tokenizer(
        TEXT_WORDS + ["<0x00>", "<0x0A>", "<0xFF>"],
        ["<s>", "</s>"],
        units + ["<sosp>", "<eosp>"],
        [],
        bos="<s>",
        eos="</s>",
        pad="</s>",
    )
    kept = _ids(tokenizer, ["<0x00>", "<0x0A>", "<0xFF>", "<sosp>", "<eosp>"])
    return Replica(causal_lm(architecture, tokenizer, tied=tied), tokenizer, _ids(tokenizer, units), kept=kept)


class ByteVocabTokenizer(PreTrainedTokenizer):
    """A slow tokenizer shaped like GLM-4-Voice's remote-code `ChatGLM4Tokenizer` (tiktoken based): its base
    vocabulary maps `bytes` to ranks, `get_vocab()` returns those `bytes` keys plus the `str` keys of the added
    tokens, and `_convert_id_to_token` returns `bytes`. Base tokens split on spaces."""

    def __init__(self, base: list[bytes], **kwargs):
        self.mergeable_ranks = {token: rank for rank, token in enumerate(base)}
        self.decoder = dict(enumerate(base))
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.decoder)

    def get_vocab(self) -> dict:
        # what ChatGLM4Tokenizer.get_vocab does: bytes for the base vocabulary, then the added tokens (str)
        vocab = {self._convert_id_to_token(i): i for i in range(self.vocab_size)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[bytes]:
        return [piece.encode("utf-8") for piece in text.split()]

    def _convert_token_to_id(self, token) -> int:
        if isinstance(token, str):
            token = token.encode("utf-8")
        return self.mergeable_ranks[token]

    def _convert_id_to_token(self, index: int) -> bytes:
        return self.decoder[index]

    def convert_tokens_to_string(self, tokens) -> str:
        return b" ".join(t if isinstance(t, bytes) else t.encode("utf-8") for t in tokens).decode("utf-8", "replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()


GLM4_SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|begin_of_audio|>", "<|end_of_audio|>"]
# Base tokens of a byte-level vocabulary, among them fragments of multi-byte characters that are not valid UTF-8
# on their own (the first two bytes of "中", a lone continuation byte) and a text token that resembles the markers.
GLM4_BASE = [w.encode() for w in TEXT_WORDS] + [b"\xe4\xb8", b"\xad", "中".encode(), b"<|audio_x|>"]


def glm4_voice_tokenizer(n_audio: int = 64) -> ByteVocabTokenizer:
    """GLM-4-Voice's tokenizer shape: a bytes-keyed base vocabulary, then chat specials and `<|audio_N|>`."""
    tokenizer = ByteVocabTokenizer(
        GLM4_BASE, eos_token="<|endoftext|>", pad_token="<|endoftext|>", bos_token="<|user|>"
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in GLM4_SPECIALS], special_tokens=True)
    tokenizer.add_tokens([AddedToken(f"<|audio_{i}|>", special=False, normalized=False) for i in range(n_audio)])
    return tokenizer


def glm4_voice(architecture: str, tied: bool) -> Replica:
    """GLM-4-Voice's tokenizer shape (`glm4_voice_tokenizer`: bytes keys for the base vocabulary) with 64
    <|audio_N|> tokens (scaled from 16,384)."""
    tokenizer = glm4_voice_tokenizer(64)
    audio = [f"<|audio_{i}|>" for i in range(64)]
    kept = _ids(tokenizer, GLM4_SPECIALS)
    return Replica(causal_lm(architecture, tokenizer, tied=tied), tokenizer, _ids(tokenizer, audio), kept=kept)


def reference(architecture: str, tied: bool) -> Replica:
    """The bundled reference speech-LLM itself (tied Llama, 512 `<|s_N|>` units after 8 specials + 28 characters)."""
    from hf_token_merge.reference.speech_llm import SPECIAL_TOKENS, load_reference_speech_llm

    model, tokenizer = load_reference_speech_llm()
    assert type(model).__name__ == architecture and model.config.tie_word_embeddings == tied
    units = _ids(tokenizer, [f"<|s_{i}|>" for i in range(512)])
    # <|unk|> is itself among the specials, so these ids are looked up directly rather than through _ids
    return Replica(model, tokenizer, units, kept=tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))


def reference_codec(architecture: str, tied: bool) -> Replica:
    """The codec speech-LLM's layout (12 specials/markers, 34 characters, 4,375 `<|s_N|>` codes) on a tiny
    freshly initialised tied Llama: the recipe's selection depends on the layout, not on the weights."""
    from hf_token_merge.reference.codec_llm import SPECIAL_TOKENS, build_codec_llm_tokenizer, codec_llama_config

    tokenizer = build_codec_llm_tokenizer(4375)
    torch.manual_seed(0)
    config = codec_llama_config(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    model = getattr(transformers, architecture)(config).eval()
    assert model.config.tie_word_embeddings == tied
    codes = _ids(tokenizer, [f"<|s_{i}|>" for i in range(4375)])
    return Replica(model, tokenizer, codes, kept=tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))


WHISPER_TEXT = 50256  # GPT-2 byte-level text tokens, ids 0..50255
WHISPER_LANGUAGES = 99
WHISPER_TIMESTAMPS = 1501


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table: printable Latin-1 bytes spell themselves, the other 68 bytes (0x00..0x20,
    0x7F..0xA0, 0xAD) become U+0100.. in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {char: byte for byte, char in _BYTE_TO_CHAR.items()}
_FOREIGN = ["é", "ü", "ñ", "ø", "日本", "Привет", "中", "ß", "ç", "😀"]


def byte_level(text: str) -> str:
    """GPT-2's byte-level spelling of `text`."""
    return "".join(_BYTE_TO_CHAR[b] for b in text.encode("utf-8"))


def is_ascii_token(token: str) -> bool:
    """Whether a byte-level token spells ASCII bytes only."""
    return all(_CHAR_TO_BYTE[char] < 128 for char in token)


def whisper(architecture: str, tied: bool) -> Replica:
    """Whisper tiny.en's real id layout (51,864 ids) with a word-level stand-in for GPT-2's byte-level vocabulary:
    50,256 text tokens (every 25th one spells non-ASCII bytes, the rest ASCII, many with a 'Ġ' space), then the
    1,608 special tokens in Whisper's order."""
    words = []
    for i in range(WHISPER_TEXT):
        if i % 25 == 24:
            words.append(byte_level(f"{' ' if i % 2 else ''}{_FOREIGN[i % len(_FOREIGN)]}{i}"))
        else:
            words.append(byte_level(f"{' ' if i % 3 else ''}w{i}"))
    specials = (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|lang{i}|>" for i in range(WHISPER_LANGUAGES)]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>"]
        + ["<|notimestamps|>"]
    )
    # transformers adds the timestamps as ordinary (non-special) added tokens
    timestamps = [f"<|{0.02 * i:.2f}|>" for i in range(WHISPER_TIMESTAMPS)]
    # Like Whisper's tokenizer, <|endoftext|> doubles as the unknown token: it is the word model's unk entry and
    # then flagged special.
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words + ["<|endoftext|>"])}, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamps])
    eot = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=eot, eos_token=eot, pad_token=eot, unk_token=eot
    )
    assert len(tokenizer) == 51864 and tokenizer.convert_tokens_to_ids("<|endoftext|>") == WHISPER_TEXT
    config = tiny_whisper_config(
        len(tokenizer),
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        special_id=WHISPER_TEXT,
        max_target_positions=64,
        tie_word_embeddings=tied,
    )
    assert architecture == "WhisperForConditionalGeneration"
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    vocab = tokenizer.get_vocab()
    foreign = sorted(i for token, i in vocab.items() if i < WHISPER_TEXT and not is_ascii_token(token))
    kept = list(range(WHISPER_TEXT, len(tokenizer)))
    return Replica(model, tokenizer, foreign, kept=kept)


BUILDERS = {
    "llasa": llasa,
    "orpheus": orpheus,
    "spark_tts": spark_tts,
    "outetts": outetts,
    "spiritlm": spiritlm,
    "speechgpt": speechgpt,
    "glm4_voice": glm4_voice,
    "whisper": whisper,
    "reference": reference,
    "reference_codec": reference_codec,
}
