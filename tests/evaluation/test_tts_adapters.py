"""Family adapters (generated ids -> codec codes) on the tiny replicas: strict mapping, round trips, and what a
MERGED model generates.

The generation tests simulate a trained merged model: at each step the merged model may only choose merged rows
that hold a valid code for the step's slot (what training on real speech teaches it), and it then emits an
original id of that row, exactly as a merged model does (greedy: the row's representative; sampling: any member).
Whether that id is valid for the slot is what the recipe's `partition_size` decides.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from hf_token_merge import apply_token_merge, load_recipe
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.evaluation.tts import (
    InvalidSpeechTokenError,
    LlasaAdapter,
    OrpheusAdapter,
    OuteTTSAdapter,
    SparkTTSAdapter,
    UnitAdapter,
    adapter_for,
)
from hf_token_merge.remap import MergedLMHead
from tests.recipes import replicas


class SlotProcessor(LogitsProcessor):
    """Allow at step i only the ids whose merged row holds one of `valid(i)`; after `steps` steps only `end_id`."""

    def __init__(self, model, prompt_length: int, valid, steps: int, end_id: int):
        head = model.get_output_embeddings()
        vocab = model.config.vocab_size
        self.row = head.index_map.long() if isinstance(head, MergedLMHead) else torch.arange(vocab)
        self.prompt_length, self.valid, self.steps, self.end_id = prompt_length, valid, steps, end_id
        self.cache: dict[int, torch.Tensor] = {}

    def allowed(self, step: int) -> torch.Tensor:
        if step >= self.steps:
            mask = torch.zeros_like(self.row, dtype=torch.bool)
            mask[self.end_id] = True
            return mask
        if step not in self.cache:
            rows = self.row[torch.as_tensor(self.valid(step))].unique()
            self.cache[step] = torch.isin(self.row, rows)
        return self.cache[step]

    def __call__(self, input_ids, scores):
        mask = self.allowed(input_ids.shape[1] - self.prompt_length)
        return scores.masked_fill(~mask[: scores.shape[-1]], float("-inf"))


def generate(model, prompt: list[int], valid, steps: int, end_id: int, *, sample: bool = False, seed: int = 0):
    """The ids a (merged) model generates after `prompt` under the slot constraint, end token included."""
    processor = SlotProcessor(model, len(prompt), valid, steps, end_id)
    torch.manual_seed(seed)
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        logits_processor=LogitsProcessorList([processor]),
        max_new_tokens=steps + 1,
        do_sample=sample,
        top_k=0,
        pad_token_id=end_id,
        eos_token_id=end_id,
    )
    return out[0, len(prompt) :].tolist()


# --- round trips and strict errors, no model -------------------------------------------------------------------------


def test_llasa_round_trip_and_markers():
    replica = replicas.llasa("LlamaForCausalLM", True)
    adapter = LlasaAdapter(replica.tokenizer, num_codes=48)
    codes = {"codes": [0, 47, 5, 5, 12]}
    ids = adapter.ids(codes)
    assert ids == replica.tokenizer.convert_tokens_to_ids([f"<|s_{n}|>" for n in codes["codes"]])
    start, end = replica.tokenizer.convert_tokens_to_ids(["<|SPEECH_GENERATION_START|>", "<|SPEECH_GENERATION_END|>"])
    out = adapter.codes([start, *ids, end, ids[0], ids[1]])  # everything after the end token is ignored
    assert out.codes == codes and out.frames == 5 and out.ended and out.seconds == pytest.approx(5 / 50)
    assert adapter.codes(ids).ended is False


def test_llasa_names_a_text_token_in_speech():
    replica = replicas.llasa("LlamaForCausalLM", True)
    adapter = LlasaAdapter(replica.tokenizer, num_codes=48)
    hello = replica.tokenizer.convert_tokens_to_ids("hello")
    with pytest.raises(InvalidSpeechTokenError, match=rf"generated id {hello} \('hello'\) at position 2 ") as caught:
        adapter.codes([*adapter.ids({"codes": [1, 2]}), hello])
    assert (caught.value.token_id, caught.value.position) == (hello, 2)
    assert isinstance(caught.value, TokenMergeError)


def test_llasa_refuses_a_tokenizer_without_enough_codes():
    replica = replicas.llasa("LlamaForCausalLM", True)
    with pytest.raises(TokenMergeError, match=r"lacks 65488 of the 65536 .*first missing: N=48"):
        LlasaAdapter(replica.tokenizer)


def test_orpheus_published_convention():
    # Orpheus decodes <custom_token_N> at frame position p to code N - 10 - p * 4096 and redistributes the 7 codes
    # of a frame to SNAC levels as [0], [1, 4], [2, 3, 5, 6].
    replica = replicas.orpheus("LlamaForCausalLM", True)
    adapter = OrpheusAdapter(replica.tokenizer)
    numbers = [10 + p * 4096 + code for p, code in enumerate([7, 11, 13, 17, 19, 23, 29])]
    numbers += [10 + p * 4096 + code for p, code in enumerate([4095, 0, 1, 2, 3, 4, 5])]
    ids = replica.tokenizer.convert_tokens_to_ids([f"<custom_token_{n}>" for n in numbers])
    start, end = (replica.tokenizer.convert_tokens_to_ids(f"<custom_token_{n}>") for n in (1, 2))
    out = adapter.codes([start, start, *ids, ids[0], end])  # crop after the last start; drop the partial frame
    assert out.codes == {"level_0": [7, 4095], "level_1": [11, 19, 0, 3], "level_2": [13, 17, 23, 29, 1, 2, 4, 5]}
    assert (out.frames, out.dropped_tokens, out.ended) == (2, 1, True)
    assert out.seconds == pytest.approx(2 * 2048 / 24000)
    assert adapter.ids(out.codes) == ids


def test_orpheus_names_an_id_of_the_wrong_position():
    replica = replicas.orpheus("LlamaForCausalLM", True)
    adapter = OrpheusAdapter(replica.tokenizer)
    frame = adapter.ids({"level_0": [1], "level_1": [2, 3], "level_2": [4, 5, 6, 7]})
    wrong = replica.tokenizer.convert_tokens_to_ids(f"<custom_token_{10 + 0 * 4096 + 9}>")  # a position-0 code
    with pytest.raises(InvalidSpeechTokenError) as caught:
        adapter.codes([*frame[:3], wrong, *frame[4:]])
    message = str(caught.value)
    assert f"generated id {wrong} ('<custom_token_19>') at position 3 sits at frame position 3" in message
    assert "code of position 0 (it decodes to SNAC code -12279, outside 0..4095)" in message
    assert "partition_size=4096" in message
    assert (caught.value.token_id, caught.value.position) == (wrong, 3)


def test_spark_tts_semantic_and_global_sections():
    replica = replicas.spark_tts("Qwen2ForCausalLM", True)
    adapter = SparkTTSAdapter(replica.tokenizer)
    globals_ = list(range(100, 132))
    prompt = adapter.prompt("hello world", global_codes=globals_)
    semantic_ids = adapter.ids({"semantic": [0, 8191, 3]})
    end = replica.tokenizer.convert_tokens_to_ids("<|end_semantic_token|>")
    out = adapter.codes([*semantic_ids, end], prompt_ids=prompt)  # voice cloning: the globals come from the prompt
    assert out.codes == {"semantic": [0, 8191, 3], "global": globals_} and out.ended
    written = adapter.ids({"semantic": [5], "global": globals_})  # controlled generation: the model writes them
    assert adapter.codes(written).codes == {"semantic": [5], "global": globals_}
    a_global = adapter.global_id[7]
    with pytest.raises(InvalidSpeechTokenError, match=rf"id {a_global} \('<\|bicodec_global_7\|>'\) at position 1 "):
        adapter.codes([semantic_ids[0], a_global])
    with pytest.raises(InvalidSpeechTokenError, match="holds 31 global tokens; BiCodec decodes exactly 32"):
        adapter.codes(adapter.ids({"semantic": [5], "global": globals_[:31]}))


def test_outetts_alternation_and_reserved_slot():
    replica = replicas.outetts("LlamaForCausalLM", True, slots=1025)
    adapter = OuteTTSAdapter(replica.tokenizer)
    ids = adapter.ids({"c1": [1, 1023], "c2": [2, 0]})
    features = replica.tokenizer.convert_tokens_to_ids(["<|word_start|>", "<|t_0.12|>", "<|code|>"])
    end = replica.tokenizer.convert_tokens_to_ids("<|audio_end|>")
    out = adapter.codes([*features, ids[0], ids[1], features[0], ids[2], ids[3], ids[0], end])
    assert out.codes == {"c1": [1, 1023], "c2": [2, 0]} and (out.frames, out.dropped_tokens) == (2, 1)
    assert out.seconds == pytest.approx(2 / 75)
    with pytest.raises(InvalidSpeechTokenError, match=r"at position 1 is a codebook-1 code where codebook 2 belongs"):
        adapter.codes([ids[0], ids[0]])
    reserved = replica.tokenizer.convert_tokens_to_ids("<|c1_1024|>")
    with pytest.raises(InvalidSpeechTokenError, match=r"is code 1024, outside the codebook's 0..1023"):
        adapter.codes([reserved])


def test_codec_packages_are_imported_lazily_with_an_install_hint():
    replica = replicas.orpheus("LlamaForCausalLM", True)
    adapter = adapter_for("orpheus", replica.tokenizer)
    # the codec packages are not installed here, and must not be needed to import the adapters
    with pytest.raises(ImportError, match=r"needs the package 'snac', which is not installed\. Fix: pip install snac"):
        adapter.load_decoder()
    with pytest.raises(TokenMergeError, match=r"No speech-token adapter for 'whisper'"):
        adapter_for("whisper", replica.tokenizer)


# --- what a merged model generates ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orpheus_merged():
    """The orpheus recipe applied with and without partition_size (one replica each, same random weights)."""
    out = {}
    for name, overrides in (("recipe", {}), ("no_partition", {"partition_size": None})):
        recipe = load_recipe("orpheus", **overrides)
        replica = replicas.orpheus(recipe.architecture, recipe.tied)
        plan = apply_token_merge(replica.model, recipe.config, tokenizer=replica.tokenizer, show_progress=False).plan
        out[name] = (replica, plan)
    return out


def _orpheus_valid(replica):
    def valid(step: int) -> list[int]:
        return replica.groups[step % 7]

    return valid


@pytest.mark.parametrize("sample", [False, True])
def test_merged_orpheus_with_partition_size_always_decodes(orpheus_merged, sample):
    replica, plan = orpheus_merged["recipe"]
    assert plan.config.partition_size == 4096
    adapter = OrpheusAdapter(replica.tokenizer)
    prompt = adapter.prompt("hello world")
    for seed in range(3):
        ids = generate(
            replica.model, prompt, _orpheus_valid(replica), 21, adapter.end_token_ids[0], sample=sample, seed=seed
        )
        out = adapter.codes(ids)
        assert out.frames == 3 and out.ended and out.dropped_tokens == 0
        assert all(0 <= c < 4096 for level in out.codes.values() for c in level)
        assert [len(out.codes[f"level_{i}"]) for i in range(3)] == [3, 6, 12]
    # and exhaustively: every id the merged model can emit for a row (any member) is a code of that row's position
    low, high = _position_range(plan, replica.groups[0][0])
    assert torch.equal(low, high)


def _position_range(plan, first_code: int):
    """Per merged row, the smallest and largest frame position among its members."""
    position = (plan.selected_ids - first_code) // 4096
    k = plan.num_clusters
    low = torch.full((k,), 7).scatter_reduce(0, plan.cluster_of_selected, position, "amin")
    high = torch.full((k,), -1).scatter_reduce(0, plan.cluster_of_selected, position, "amax")
    return low, high


def test_merged_orpheus_without_partition_size_emits_codes_of_the_wrong_position(orpheus_merged):
    replica, plan = orpheus_merged["no_partition"]
    assert plan.config.partition_size is None
    first = replica.groups[0][0]
    low, high = _position_range(plan, first)
    assert int((low != high).sum()) > plan.num_clusters // 2  # without partitions most merged rows mix positions
    adapter = OrpheusAdapter(replica.tokenizer)
    prompt = adapter.prompt("hello world")
    # sampling emits any member of the chosen row, so a row that mixes positions soon yields a foreign code
    ids = generate(replica.model, prompt, _orpheus_valid(replica), 21, adapter.end_token_ids[0], sample=True)
    with pytest.raises(InvalidSpeechTokenError, match=r"but is a code of position \d") as caught:
        adapter.codes(ids)
    bad, slot = caught.value.token_id, caught.value.position
    # the offending id really is a merged row's representative of another position's block
    assert (bad - first) // 4096 != slot % 7
    assert bad in plan.selected_ids.tolist()
    row_of = plan.cluster_of_selected[plan.selected_ids.tolist().index(bad)]
    assert int(low[row_of]) != int(high[row_of])


def test_merged_llasa_reference_spark_outetts_decode(tmp_path):
    cases = {
        "llasa": (lambda r: LlasaAdapter(r.tokenizer, num_codes=48), lambda r, a: lambda step: r.intended),
        "reference": (
            lambda r: UnitAdapter(r.tokenizer, 512),
            lambda r, a: lambda step: r.intended,
        ),
        "spark_tts": (lambda r: SparkTTSAdapter(r.tokenizer), lambda r, a: lambda step: r.groups[0]),
        "outetts": (lambda r: OuteTTSAdapter(r.tokenizer), lambda r, a: lambda step: r.groups[step % 2]),
    }
    for family, (make, valid) in cases.items():
        recipe = load_recipe(family)
        replica = replicas.BUILDERS[family](recipe.architecture, recipe.tied)
        apply_token_merge(replica.model, recipe.config, tokenizer=replica.tokenizer, show_progress=False)
        adapter = make(replica)
        prompt = replica.tokenizer("hello world").input_ids
        for sample in (False, True):
            ids = generate(replica.model, prompt, valid(replica, adapter), 8, adapter.end_token_ids[0], sample=sample)
            out = adapter.codes(ids)
            assert out.ended and out.frames == (4 if family == "outetts" else 8), family
            for name, values in out.codes.items():
                assert values == [] or min(values) >= 0, (family, name)


def test_llasa_prompt_with_and_without_a_chat_template():
    replica = replicas.llasa("LlamaForCausalLM", True)
    adapter = LlasaAdapter(replica.tokenizer, num_codes=48)
    plain = replica.tokenizer.convert_ids_to_tokens(adapter.prompt("hello world"))
    assert plain[0] == "<|begin_of_text|>" and plain[-1] == "<|SPEECH_GENERATION_START|>"
    assert "<|TEXT_UNDERSTANDING_START|>" in plain and "<|TEXT_UNDERSTANDING_END|>" in plain
    separator = "<|finetune_right_pad_id|>"  # a toy chat template: <bos>, then each turn after a separator
    replica.tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}" + separator + "{{ m['content'] }}{% endfor %}"
    )
    chat = replica.tokenizer.convert_ids_to_tokens(adapter.prompt("hello world"))
    assert chat[:2] == ["<|begin_of_text|>", separator] and chat[-1] == "<|SPEECH_GENERATION_START|>"
    assert chat.count(separator) == 2  # the user turn, then the assistant turn it continues
