"""Builders of tiny models and tokenizers for the tests: random weights, built locally, never downloaded.

Every builder plants near-duplicate rows in the block of tokens meant to merge: the selected id at position
`j` (in sorted id order) gets the row `centers[j % n_centers] + noise`. Because the first member of center
`c` is position `c`, the canonical clustering of the selected ids is exactly `arange(n) % n_centers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tokenizers import AddedToken, Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    WhisperConfig,
    WhisperForConditionalGeneration,
)
from transformers.modeling_outputs import CausalLMOutput

HIDDEN = 32
NOISE = 1e-3

TEXT_WORDS = ["<unk>", "hello", "world", "the", "a", "cat", "dog", "sat", "on", "mat", "speech", "text", "is", "good"]


@dataclass
class Bundle:
    """A tiny model with what a test needs to know about it.

    Attributes:
        model: The model, in eval mode.
        tokenizer: Its tokenizer, or None.
        selected_ids: Sorted ids of the planted block (what the family's preset or range selects).
        n_centers: Number of planted clusters in that block.
        token_id_range: Half-open range covering exactly the planted block.
        extra: Other ids of interest (by name).
        selection: The `TokenMergeConfig` selection a real user would write for this model.
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerFast | None
    selected_ids: torch.Tensor
    n_centers: int
    token_id_range: tuple[int, int]
    extra: dict[str, list[int]] = field(default_factory=dict)
    selection: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.selection:
            self.selection = {"token_id_range": self.token_id_range}

    @property
    def planted_labels(self) -> torch.Tensor:
        """Canonical cluster label of every selected id (see module docstring)."""
        return torch.arange(self.selected_ids.numel()) % self.n_centers

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)


def plant_clusters(
    weight: torch.Tensor, ids: torch.Tensor, n_centers: int, generator: torch.Generator, noise: float = NOISE
) -> None:
    """Overwrite `weight[ids]` with `n_centers` random centers plus tiny noise, centers interleaved."""
    width = weight.shape[1]
    centers = torch.randn(n_centers, width, generator=generator)
    assignment = torch.arange(ids.numel()) % n_centers
    rows = centers[assignment] + noise * torch.randn(ids.numel(), width, generator=generator)
    with torch.no_grad():
        weight[ids] = rows.to(weight.dtype)


def _cast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast like `from_pretrained(dtype=...)` does: weights in `dtype`, rotary frequencies kept in float32."""
    frequencies = {name: buffer.clone() for name, buffer in model.named_buffers() if name.endswith("inv_freq")}
    model = model.to(dtype)
    for name, buffer in frequencies.items():
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, buffer)
    return model.eval()


def build_tokenizer(
    words: list[str],
    specials: list[str],
    added: list[str],
    trailing_specials: list[str],
    *,
    bos: str,
    eos: str,
    pad: str,
) -> PreTrainedTokenizerFast:
    """A real fast tokenizer: WordLevel text words, then special tokens, then added (non-special) tokens,
    then more special tokens; ids are assigned in that order."""
    backend = Tokenizer(WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in trailing_specials])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>"
    )
    expected = len(words) + len(specials) + len(added) + len(trailing_specials)
    assert len(tokenizer) == expected, (len(tokenizer), expected)
    return tokenizer


LLASA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|TEXT_UNDERSTANDING_START|>",
    "<|TEXT_UNDERSTANDING_END|>",
    "<|SPEECH_GENERATION_START|>",
    "<|SPEECH_GENERATION_END|>",
]


def llasa_tokenizer(n_speech: int = 48) -> PreTrainedTokenizerFast:
    """Llama-3 style text vocabulary, Llasa markers, `<|s_0|>`..`<|s_{n-1}|>`, then reserved specials."""
    return build_tokenizer(
        TEXT_WORDS,
        LLASA_SPECIALS,
        [f"<|s_{i}|>" for i in range(n_speech)],
        ["<|reserved_0|>", "<|reserved_1|>", "<|reserved_2|>"],
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad="<|finetune_right_pad_id|>",
    )


def build_llama(
    *,
    tied: bool = True,
    n_speech: int = 48,
    n_centers: int = 8,
    extra_rows: int = 3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    layers: int = 1,
) -> Bundle:
    """A Llasa-like `LlamaForCausalLM`: the model has `extra_rows` rows beyond the tokenizer (like padded vocabs)."""
    tokenizer = llasa_tokenizer(n_speech)
    speech = torch.tensor([tokenizer.convert_tokens_to_ids(f"<|s_{i}|>") for i in range(n_speech)])
    config = LlamaConfig(
        vocab_size=len(tokenizer) + extra_rows,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    plant_clusters(model.get_input_embeddings().weight, speech, n_centers, generator)
    if not tied:
        plant_clusters(model.get_output_embeddings().weight, speech, n_centers, generator)
    model = _cast(model, dtype)
    return Bundle(
        model,
        tokenizer,
        speech,
        n_centers,
        (int(speech[0]), int(speech[-1]) + 1),
        extra={"markers": [tokenizer.convert_tokens_to_ids(t) for t in LLASA_SPECIALS[3:]]},
        selection={"preset": "llasa"},
    )


def build_qwen2(*, n_semantic: int = 32, n_global: int = 6, n_centers: int = 4, seed: int = 1) -> Bundle:
    """A Spark-TTS-like tied `Qwen2ForCausalLM` with `<|bicodec_global_N|>` before `<|bicodec_semantic_N|>`.

    The global rows are planted as near-duplicates too, so a selection that wrongly took them would cluster them.
    """
    tokenizer = build_tokenizer(
        TEXT_WORDS,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        [f"<|bicodec_global_{i}|>" for i in range(n_global)]
        + ["<|start_global_token|>", "<|end_global_token|>", "<|start_semantic_token|>", "<|end_semantic_token|>"]
        + [f"<|bicodec_semantic_{i}|>" for i in range(n_semantic)],
        [],
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|endoftext|>",
    )
    semantic = torch.tensor([tokenizer.convert_tokens_to_ids(f"<|bicodec_semantic_{i}|>") for i in range(n_semantic)])
    global_ids = [tokenizer.convert_tokens_to_ids(f"<|bicodec_global_{i}|>") for i in range(n_global)]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    plant_clusters(model.get_input_embeddings().weight, semantic, n_centers, generator)
    plant_clusters(model.get_input_embeddings().weight, torch.tensor(global_ids), 2, generator)
    return Bundle(
        model.eval(),
        tokenizer,
        semantic,
        n_centers,
        (int(semantic[0]), int(semantic[-1]) + 1),
        extra={"global": global_ids},
        selection={"preset": "spark_tts"},
    )


WHISPER_MEL_BINS = 8
WHISPER_FRAMES = 16  # 2 * max_source_positions


def tiny_whisper_config(
    vocab_size: int, *, decoder_start_token_id: int, special_id: int, max_target_positions: int, **overrides
) -> WhisperConfig:
    """A 1 + 1 layer Whisper of width HIDDEN; `special_id` serves as pad, bos and eos."""
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=WHISPER_MEL_BINS,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * HIDDEN,
        decoder_ffn_dim=2 * HIDDEN,
        d_model=HIDDEN,
        max_source_positions=WHISPER_FRAMES // 2,
        max_target_positions=max_target_positions,
        decoder_start_token_id=decoder_start_token_id,
        pad_token_id=special_id,
        bos_token_id=special_id,
        eos_token_id=special_id,
        suppress_tokens=[],
        begin_suppress_tokens=None,
        **overrides,
    )


def build_whisper(*, vocab_size: int = 64, block: tuple[int, int] = (16, 48), n_centers: int = 8, seed: int = 2):
    """A tiny `WhisperForConditionalGeneration` (decoder embedding tied to `proj_out`) with a planted id block."""
    config = tiny_whisper_config(vocab_size, decoder_start_token_id=3, special_id=2, max_target_positions=32)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    ids = torch.arange(*block)
    plant_clusters(model.get_input_embeddings().weight, ids, n_centers, torch.Generator().manual_seed(seed))
    return Bundle(model.eval(), None, ids, n_centers, block)


def whisper_inputs(batch: int = 2, length: int = 6, seed: int = 0):
    """`(input_features, decoder_input_ids)` for the tiny Whisper, decoder ids spanning merged and kept ids."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, WHISPER_MEL_BINS, WHISPER_FRAMES, generator=generator)
    decoder_ids = torch.randint(4, 64, (batch, length), generator=generator)
    decoder_ids[:, 0] = 3
    return features, decoder_ids


class CustomConfig(PretrainedConfig):
    model_type = "hf_token_merge_test_custom"

    def __init__(self, vocab_size: int = 40, hidden_size: int = HIDDEN, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


class CustomModel(PreTrainedModel):
    """A model with custom layer names (`tok_emb`, `out_head`) that `get_input_embeddings` cannot find."""

    config_class = CustomConfig
    base_model_prefix = ""

    def __init__(self, config: CustomConfig):
        super().__init__(config)
        self.tok_emb = nn.Embedding(config.vocab_size, config.hidden_size)
        self.mixer = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.post_init()

    def forward(self, input_ids: torch.Tensor) -> CausalLMOutput:
        hidden = torch.tanh(self.mixer(self.tok_emb(input_ids)))
        return CausalLMOutput(logits=self.out_head(hidden))


def build_custom(*, vocab_size: int = 40, block: tuple[int, int] = (8, 32), n_centers: int = 4, seed: int = 3):
    """The custom-named model, untied, with a biased head and planted rows in both tables."""
    torch.manual_seed(seed)
    model = CustomModel(CustomConfig(vocab_size=vocab_size, pad_token_id=None, bos_token_id=None, eos_token_id=None))
    ids = torch.arange(*block)
    generator = torch.Generator().manual_seed(seed)
    plant_clusters(model.tok_emb.weight, ids, n_centers, generator)
    plant_clusters(model.out_head.weight, ids, n_centers, generator)
    return Bundle(model.eval(), None, ids, n_centers, block)


def random_ids(vocab_size: int, shape=(2, 10), seed: int = 0, must_include: torch.Tensor | None = None):
    """Random ids in `[0, vocab_size)`; `must_include` ids are written from the second position on."""
    ids = torch.randint(0, vocab_size, shape, generator=torch.Generator().manual_seed(seed))
    if must_include is not None:
        flat = ids.view(-1)
        flat[1 : 1 + must_include.numel()] = must_include[: flat.numel() - 1]
    return ids


def sample_ids(bundle: Bundle, shape=(2, 32), seed: int = 0) -> torch.Tensor:
    """Ids that cover every selected id plus random others (Whisper decoder ids start with decoder_start)."""
    ids = random_ids(bundle.vocab_size, shape, seed, must_include=bundle.selected_ids)
    if isinstance(bundle.model, WhisperForConditionalGeneration):
        ids[:, 0] = bundle.model.config.decoder_start_token_id
    return ids


def forward(model: nn.Module, ids: torch.Tensor, **kwargs):
    """The model's output for token ids (decoder ids for Whisper, with fixed random audio features)."""
    with torch.no_grad():
        if isinstance(model, WhisperForConditionalGeneration):
            features, _ = whisper_inputs(batch=ids.shape[0])
            return model(input_features=features.to(model.dtype), decoder_input_ids=ids, **kwargs)
        return model(input_ids=ids, **kwargs)


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return forward(model, ids).logits


def hidden_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The hidden states the LM head reads."""
    with torch.no_grad():
        if isinstance(model, CustomModel):
            return torch.tanh(model.mixer(model.tok_emb(ids)))
        if isinstance(model, WhisperForConditionalGeneration):
            features, _ = whisper_inputs(batch=ids.shape[0])
            return model.model(input_features=features.to(model.dtype), decoder_input_ids=ids).last_hidden_state
        return model.model(input_ids=ids).last_hidden_state


def snapshot(model: nn.Module):
    """Everything a failed merge must leave untouched: module types by name and state_dict tensors (cloned)."""
    types = {name: type(module) for name, module in model.named_modules()}
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    quantization = getattr(getattr(model, "config", None), "quantization_config", None)
    return types, state, quantization


def assert_unchanged(model: nn.Module, before) -> None:
    """Assert that `model` matches a `snapshot` taken earlier."""
    types, state, quantization = before
    assert {name: type(module) for name, module in model.named_modules()} == types
    after = model.state_dict()
    assert after.keys() == state.keys()
    for name, tensor in state.items():
        assert after[name].dtype == tensor.dtype, name
        assert after[name].shape == tensor.shape, name
        assert after[name].device == tensor.device, name
        if tensor.device.type != "meta":  # offloaded weights have no values to compare
            assert torch.equal(after[name], tensor), name
    assert getattr(getattr(model, "config", None), "quantization_config", None) is quantization


SPEECH_START, SPEECH_VOCAB = 32, 64


def build_speech_decoder(family: str = "llama", *, layers: int = 4, seed: int = 0) -> nn.Module:
    """A decoder whose ids 32..63 are speech tokens: id `32 + j` has the row of sound `j % 8` (+ noise).

    The eight sound rows are orthonormal, so consecutive speech tokens of one sound have cosine ~1 and tokens of
    different sounds ~0 at the input; ids 0..31 are text with random rows.
    """
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_class, model_class = classes[family]
    config = config_class(
        vocab_size=SPEECH_VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    generator = torch.Generator().manual_seed(seed)
    sounds = torch.linalg.qr(torch.randn(HIDDEN, 8, generator=generator))[0].T
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        for token in range(SPEECH_START, SPEECH_VOCAB):
            weight[token] = sounds[(token - SPEECH_START) % 8] + NOISE * torch.randn(HIDDEN, generator=generator)
    return model


def build_qwen2_audio(*, audio_token_id: int = 60, seed: int = 0):
    """A tiny `Qwen2AudioForConditionalGeneration` (random weights): 40 feature frames give 10 audio tokens."""
    from transformers import Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioForConditionalGeneration

    audio = Qwen2AudioEncoderConfig(
        num_mel_bins=8,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        d_model=16,
        max_source_positions=20,
    )
    text = Qwen2Config(
        vocab_size=64,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    config = Qwen2AudioConfig(audio_config=audio.to_dict(), text_config=text.to_dict(), audio_token_id=audio_token_id)
    torch.manual_seed(seed)
    return Qwen2AudioForConditionalGeneration(config).eval()


def frequent_ids_shared_metric(frequent_ids):
    """A stand-in evaluation: 'WER' 0.10 plus one point for each of `frequent_ids` that no longer has a row alone."""

    def evaluate(model):
        from hf_token_merge.remap import MergedEmbedding

        embedding = model.get_input_embeddings()
        if not isinstance(embedding, MergedEmbedding):
            return {"wer": 0.10}
        index = embedding.index_map.long()
        sizes = torch.bincount(index, minlength=embedding.num_embeddings)
        return {"wer": 0.10 + 0.01 * int((sizes[index[frequent_ids]] > 1).sum())}

    return evaluate
