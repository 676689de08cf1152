"""`export_plain`: write a merged model as an ordinary transformers checkpoint with a smaller vocabulary.

The plugin format keeps the original id space through index maps. The plain export renumbers instead:
merged row r becomes token id r, `vocab_size` shrinks, every id in the config and generation config is
remapped, and the tokenizer is rewritten so that every member of a merged cluster encodes to the merged id
and the merged id decodes to the cluster's representative. It loads with plain transformers, no import of
hf_token_merge, and its greedy output matches the in-place merged model with `logit_correction='none'`
(a plain model has one logit per merged row, so a correction cannot be carried over).

Merges inside a BPE base vocabulary are exported the way vocabulary trimmers do it: a token that cannot keep its
own id leaves the vocabulary, with every BPE merge that builds it or uses it, and the tokenizer spells such text
with the pieces that stay. The shared row of a `method="frequency"` merge ("all the rarer ids") disappears
entirely, so the plain model is that much smaller. `PlainLayout` holds the resulting numbering.
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_token_merge.atomic import atomic_directory, check_target
from hf_token_merge.errors import TokenMergeError
from hf_token_merge.remap.modules import MergedEmbedding, MergedLMHead
from hf_token_merge.remap.plan import MergePlan

_ID_LIST_KEYS = ("suppress_tokens", "begin_suppress_tokens")
_ID_MAP_KEYS = ("lang_to_id", "task_to_id")


def _merged_modules(model: nn.Module) -> tuple[str, MergedEmbedding, str | None, MergedLMHead | None]:
    embedding = head = None
    embedding_name = head_name = None
    for name, module in model.named_modules():
        if isinstance(module, MergedEmbedding):
            embedding_name, embedding = name, module
        elif isinstance(module, MergedLMHead):
            head_name, head = name, module
    if embedding is None:
        raise TokenMergeError("The model is not token-merged; call apply_token_merge(model, config) first.")
    return embedding_name, embedding, head_name, head


def _is_id_key(key: str) -> bool:
    return isinstance(key, str) and key.endswith(("token_id", "token_ids"))


def remap_token_ids(config: dict[str, Any], old_to_new: torch.Tensor) -> dict[str, Any]:
    """Return a copy of a config dict with every token id mapped to its merged id.

    Covers `*_token_id(s)` keys, `suppress_tokens`/`begin_suppress_tokens`, `forced_decoder_ids` pairs,
    `bad_words_ids`, Whisper's `lang_to_id`/`task_to_id`, and nested sub-configs. An id that maps to -1 (a
    token the plain export removes) is left out of the id lists (`suppress_tokens`, ...); anywhere else it is
    refused.

    Args:
        config: A `to_dict()` of a model or generation config.
        old_to_new: `(vocab_size,)` merged id of every original id (-1: removed).

    Returns:
        The remapped dict.

    Raises:
        TokenMergeError: When a single id the config relies on (`eos_token_id`, a `lang_to_id` entry, a forced
            decoder id) is among the removed tokens.
    """
    table = old_to_new.tolist()

    def one(value: int, key: str) -> int:
        if not 0 <= value < len(table):
            return value
        if table[value] < 0:
            raise TokenMergeError(
                f"The config's {key} uses token id {value}, which this merge removes from the plain vocabulary. "
                "Fix: leave that id out of the selection (special and config token ids are protected unless "
                "allow_special_tokens=True)."
            )
        return table[value]

    def ids(value: Any, key: str, drop_removed: bool) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return one(value, key)
        if isinstance(value, list):
            if drop_removed:
                value = [v for v in value if not (isinstance(v, int) and 0 <= v < len(table) and table[v] < 0)]
            return [ids(v, key, drop_removed) for v in value]
        return value

    remapped: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in _ID_MAP_KEYS:
            remapped[key] = {name: ids(v, f"{key}[{name!r}]", False) for name, v in value.items()}
        elif isinstance(value, dict):
            remapped[key] = remap_token_ids(value, old_to_new)
        elif key in _ID_LIST_KEYS or key == "bad_words_ids":
            remapped[key] = ids(value, key, True)
        elif _is_id_key(key):
            remapped[key] = ids(value, key, False)
        elif key == "forced_decoder_ids" and value is not None:
            remapped[key] = [[position, ids(token, key, False)] for position, token in value]
        else:
            remapped[key] = value
    return remapped


@dataclass(frozen=True)
class PlainLayout:
    """The token numbering of a plain export.

    Attributes:
        old_to_plain: `(vocab_size,)` plain id of every original id; -1 for a token the export removes.
        kept_rows: `(n,)` merged-embedding rows that become plain ids 0..n-1, in order.
        removed_ids: Original base-vocabulary ids whose string leaves the tokenizer (sorted).
        vocab_size: Rows of the plain model: n plus the padding.
        padding_ids: Plain ids of the padding rows (never generated: they are suppressed).
    """

    old_to_plain: torch.Tensor
    kept_rows: torch.Tensor
    removed_ids: list[int]
    vocab_size: int
    padding_ids: list[int]


def _tokenizer_state(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TokenMergeError("export_plain rewrites fast tokenizers only; load the tokenizer with use_fast=True.")
    return json.loads(backend.to_str())


def plain_layout(plan: MergePlan, tokenizer: Any = None, pad_vocab_to_multiple_of: int | None = None) -> PlainLayout:
    """Work out which tokens a plain export keeps and how it numbers them.

    Merged tokens among the tokenizer's added tokens keep their row (many-to-one through a normaliser, see
    `rewrite_tokenizer`). Merged tokens of the base vocabulary cannot map many-to-one, so they leave it: every
    member except the cluster's representative, and for `method="frequency"` the whole shared cluster, whose
    row then disappears. Without a tokenizer nothing is removed, nor are rows the tokenizer does not name.

    Args:
        plan: The applied plan.
        tokenizer: The original fast tokenizer (or None).
        pad_vocab_to_multiple_of: Round the plain vocabulary up to a multiple of this (None: no padding).

    Returns:
        The layout.

    Raises:
        TokenMergeError: For a padding multiple below 1.
    """
    if pad_vocab_to_multiple_of is not None and (
        isinstance(pad_vocab_to_multiple_of, bool)
        or not isinstance(pad_vocab_to_multiple_of, int)
        or pad_vocab_to_multiple_of < 1
    ):
        raise TokenMergeError(
            f"pad_vocab_to_multiple_of must be a positive integer (e.g. 64), got {pad_vocab_to_multiple_of!r}. "
            "Fix: pass an int >= 1, or None for no padding."
        )
    removed: list[int] = []
    if tokenizer is not None:
        state = _tokenizer_state(tokenizer)
        added_ids = {entry["id"] for entry in state["added_tokens"]}
        vocab = state["model"].get("vocab")
        base_ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab or [])))
        sizes = plan.cluster_sizes.tolist()
        representatives = plan.representative_ids.tolist()
        for old_id, cluster in zip(plan.selected_ids.tolist(), plan.cluster_of_selected.tolist(), strict=True):
            # added tokens merge many-to-one (rewrite_tokenizer); rows past the tokenizer have no string to remove
            if old_id in added_ids or old_id not in base_ids or sizes[cluster] < 2:
                continue
            if plan.config.method == "frequency" or old_id != representatives[cluster]:
                removed.append(old_id)
    old_to_new = plan.old_to_new
    row_alive = torch.zeros(plan.num_rows, dtype=torch.bool)
    alive_ids = torch.ones(plan.vocab_size, dtype=torch.bool)
    alive_ids[torch.tensor(removed, dtype=torch.long)] = False
    row_alive[old_to_new[alive_ids]] = True
    kept_rows = row_alive.nonzero().flatten()
    row_to_plain = torch.full((plan.num_rows,), -1, dtype=torch.long)
    row_to_plain[kept_rows] = torch.arange(kept_rows.numel())
    old_to_plain = row_to_plain[old_to_new]
    size = int(kept_rows.numel())
    if pad_vocab_to_multiple_of is not None:
        size = -(-size // pad_vocab_to_multiple_of) * pad_vocab_to_multiple_of
    return PlainLayout(
        old_to_plain=old_to_plain,
        kept_rows=kept_rows,
        removed_ids=removed,
        vocab_size=size,
        padding_ids=list(range(int(kept_rows.numel()), size)),
    )


def rewrite_tokenizer(tokenizer: Any, plan: MergePlan, layout: PlainLayout | None = None) -> Any:
    """Renumber a fast tokenizer to the plain export's ids.

    Unmerged tokens keep their string and get their plain id. In each cluster of added tokens the representative
    keeps its string; the other members' strings are removed from the added vocabulary and rewritten to the
    representative by a `Replace` normaliser, so they still encode to the merged id. Tokens of a BPE base
    vocabulary that the layout removes leave the vocabulary together with every merge that builds them or uses
    them (a vocabulary trim): text that used them is spelled with the pieces that stay. Padding rows become
    special added tokens `<|vocab_pad_N|>` (as do rows the model had beyond its tokenizer, when padding), so the
    tokenizer covers every row and keeps the ids of the padding.

    Args:
        tokenizer: A transformers fast tokenizer of the original model.
        plan: The applied plan.
        layout: The plain numbering (default: `plain_layout(plan, tokenizer)`, no padding).

    Returns:
        A new tokenizer of the same class over plain ids.

    Raises:
        TokenMergeError: For a slow tokenizer; for removed base tokens in a non-BPE base vocabulary; for removed
            tokens that no BPE merge builds (the alphabet every text is spelled with).
    """
    from tokenizers import Regex, Tokenizer, normalizers

    state = _tokenizer_state(tokenizer)
    if layout is None:
        layout = plain_layout(plan, tokenizer)
    table = layout.old_to_plain.tolist()
    rewrites = _member_rewrites(plan, state["added_tokens"])
    vocab = state["model"].get("vocab")
    state["added_tokens"] = _plain_added_tokens(state["added_tokens"], plan, layout, vocab, bool(rewrites))

    model = state["model"]
    if layout.removed_ids:
        _trim_base_vocabulary(model, layout.removed_ids, table)
    elif isinstance(vocab, dict):
        model["vocab"] = {token: table[i] if i < len(table) else i for token, i in vocab.items()}
    # Unigram (a list of [piece, score] in id order) only reaches here without removals: merged ids are added
    if state.get("post_processor") is not None:
        state["post_processor"] = json.loads(json.dumps(state["post_processor"]), object_hook=_remap_special(table))

    new_backend = Tokenizer.from_str(json.dumps(state))
    if rewrites:
        replaces = [normalizers.Replace(Regex(pattern), content) for pattern, content in rewrites]
        if new_backend.normalizer is not None:
            replaces.append(new_backend.normalizer)
        new_backend.normalizer = normalizers.Sequence(replaces)
    rewritten = copy.deepcopy(tokenizer)
    rewritten._tokenizer = new_backend
    return rewritten


def _member_rewrites(plan: MergePlan, added_tokens: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """`(pattern, representative string)` per cluster of added tokens: its other members' strings, rewritten."""
    id_to_content = {entry["id"]: entry["content"] for entry in added_tokens}
    rewrites = []
    for cluster, representative in enumerate(plan.representative_ids.tolist()):
        if representative not in id_to_content:
            continue  # a base-vocabulary cluster: its members leave the vocabulary instead
        others = [id_to_content[i] for i in plan.members(cluster).tolist() if i != representative]
        if others:
            pattern = "|".join(re.escape(text) for text in others)
            rewrites.append((pattern, id_to_content[representative]))
    return rewrites


def _plain_added_tokens(
    added_tokens: list[dict[str, Any]], plan: MergePlan, layout: PlainLayout, vocab: Any, rewritten: bool
) -> list[dict[str, Any]]:
    """The added tokens over plain ids: merged members dropped, then a `<|vocab_pad_N|>` for each row past them."""
    table = layout.old_to_plain.tolist()
    selected = set(plan.selected_ids.tolist())
    representatives = set(plan.representative_ids.tolist())
    added = []
    for entry in added_tokens:
        old_id = entry["id"]
        if old_id in selected and old_id not in representatives:
            continue
        entry = dict(entry, id=table[old_id])
        if old_id in representatives and rewritten:
            entry["normalized"] = True  # matched after the Replace normaliser has rewritten its mates
        added.append(entry)
    named = [entry["id"] for entry in added] + [
        table[i] for i in (vocab.values() if isinstance(vocab, dict) else []) if i < len(table) and table[i] >= 0
    ]
    # a tokenizer's ids have no holes: name every row from its last token on (rows a model already had past its
    # tokenizer, then the padding), so the padding rows keep their ids
    first = max(named, default=-1) + 1 if layout.padding_ids else layout.vocab_size
    for plain_id in range(first, layout.vocab_size):
        added.append(
            {
                "id": plain_id,
                "content": f"<|vocab_pad_{plain_id - first}|>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    return added


def _trim_base_vocabulary(model: dict[str, Any], removed_ids: list[int], table: list[int]) -> None:
    """Drop `removed_ids` from a BPE model's vocab and merges, in place, and renumber the rest with `table`."""
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise TokenMergeError(
            f"This merge removes {len(removed_ids)} tokens of a {model.get('type')} base vocabulary; export_plain "
            "trims BPE vocabularies only. Fix: keep the plugin format (save_pretrained) for this merge."
        )
    id_to_token = {i: token for token, i in model["vocab"].items()}
    removed = {id_to_token[i] for i in removed_ids if i in id_to_token}

    def pair(merge: Any) -> tuple[str, str]:
        return tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge)

    built = {"".join(pair(merge)) for merge in model["merges"]}
    alphabet = sorted(removed - built)
    if alphabet:
        raise TokenMergeError(
            f"This merge removes base tokens {alphabet[:5]} that no BPE merge builds: the tokenizer spells every "
            "text with them. Fix: leave them out of the selection (for a byte-level BPE such as Whisper's, start "
            "token_id_range at 256)."
        )
    kept_merges = [
        merge for merge in model["merges"] if not ({*pair(merge)} & removed) and "".join(pair(merge)) not in removed
    ]
    model["merges"] = kept_merges
    model["vocab"] = {token: table[i] for token, i in model["vocab"].items() if token not in removed}
    reachable = {token for token in model["vocab"] if token not in built} | {
        "".join(pair(merge)) for merge in kept_merges
    }
    unreachable = len(model["vocab"]) - len(reachable & model["vocab"].keys())
    if unreachable:
        warnings.warn(
            f"{unreachable} kept base tokens lost the only BPE merge that built them (a part was removed): the "
            "tokenizer no longer produces them when encoding, though the model may still generate and decode them.",
            UserWarning,
            stacklevel=3,
        )


def _remap_special(table: list[int]):
    def hook(node: dict[str, Any]) -> dict[str, Any]:
        if "ids" in node and "tokens" in node and isinstance(node["ids"], list):
            node["ids"] = [table[i] for i in node["ids"]]
        if (
            "id" in node
            and isinstance(node.get("id"), list)
            and len(node["id"]) == 2
            and isinstance(node["id"][1], int)
        ):
            node["id"] = [node["id"][0], table[node["id"][1]]]
        return node

    return hook


def _is_processor(obj: Any) -> bool:
    return hasattr(obj, "tokenizer") and hasattr(obj, "save_pretrained") and hasattr(obj, "feature_extractor")


def export_plain(
    model: nn.Module,
    plan: MergePlan,
    save_directory: str | os.PathLike,
    tokenizer: Any = None,
    *,
    pad_vocab_to_multiple_of: int | None = None,
    overwrite: bool = False,
) -> str:
    """Write `model` (merged in place with `plan`) as a plain transformers checkpoint.

    The folder is written with `atomic_directory`: built beside `save_directory` and swapped in, so a previous
    export stays until the new one is complete.

    Args:
        model: The merged model.
        plan: The plan `apply_token_merge` applied (`result.plan`).
        save_directory: Output folder. An existing one is replaced only when it is empty or hf_token_merge wrote
            it; never the current directory or one of its parents.
        tokenizer: The original fast tokenizer, or a processor holding one (Whisper's `WhisperProcessor`: its
            feature extractor is saved too, so `pipeline(model=save_directory)` works); rewritten to plain ids.
            Needed to trim merged tokens out of a BPE base vocabulary (see `plain_layout`).
        pad_vocab_to_multiple_of: Round the vocabulary up to a multiple of this (e.g. 64, which serving engines
            and GPU kernels prefer). Padding rows are zero, named `<|vocab_pad_N|>` in the tokenizer, and added to
            `generation_config.suppress_tokens`, so `generate`, pipelines and CTranslate2 never emit them.
        overwrite: Replace `save_directory` even when it is a non-empty folder hf_token_merge did not write.

    Returns:
        The output folder.

    Raises:
        TokenMergeError: For an unmerged model, a plan of another merge, an `lm_head="keep"` merge, a bad
            padding multiple, a merge that removes a token the config needs or the BPE alphabet, or a
            `save_directory` that `check_target` refuses; all before anything is written.
    """
    embedding_name, embedding, head_name, head = _merged_modules(model)
    if not torch.equal(embedding.index_map.cpu().long(), plan.old_to_new):
        raise TokenMergeError("The plan does not match the model's merged embedding; pass result.plan of this merge.")
    parts = plain_parts(
        plan,
        model.config,
        getattr(model, "generation_config", None),
        tokenizer,
        pad_vocab_to_multiple_of,
        has_head=head is not None,
    )
    check_target(save_directory, overwrite=overwrite)
    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not name.endswith((".index_map", ".logit_offset"))
    }
    row_names = [f"{embedding_name}.weight"]
    if head is not None:
        row_names += [f"{head_name}.weight"] + ([f"{head_name}.bias"] if head.bias is not None else [])
    for name in row_names:
        if name in state:
            state[name] = parts.plain_rows(plan, state[name].detach())

    with torch.device("meta"):
        plain = type(model)(parts.config)
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    missing = [name for name, p in plain.named_parameters() if p.device.type == "meta"]
    if missing:
        raise RuntimeError(f"export_plain could not fill {missing[:5]}; please report this model class.")
    if parts.generation_config is not None:
        plain.generation_config = parts.generation_config

    with atomic_directory(save_directory, overwrite=overwrite) as staging:
        plain.save_pretrained(staging)
        parts.save_tokenizer(staging)
    return os.fspath(save_directory)


@dataclass
class PlainParts:
    """Everything of a plain export but the tensors: numbering, config, generation config and tokenizer.

    Attributes:
        layout: The plain numbering.
        config: The plain model config (renumbered ids, smaller vocabulary, no quantization record).
        generation_config: The plain generation config (padding and dropped merged rows suppressed), or None.
        tokenizer: The renumbered tokenizer, or None.
        processor: The processor holding it (Whisper), or None.
    """

    layout: PlainLayout
    config: Any
    generation_config: Any
    tokenizer: Any
    processor: Any

    def plain_rows(self, plan: MergePlan, rows: torch.Tensor) -> torch.Tensor:
        """The plain table (or bias) of a merged one: kept rows in plain-id order, then zero padding rows.

        Args:
            plan: The applied plan.
            rows: A merged table with `plan.num_rows` rows, or an untied dropped head's rows (one per kept id),
                which is first padded to the merged rows with zero rows for the merged ids.

        Returns:
            `(layout.vocab_size, ...)` rows.
        """
        if rows.shape[0] != plan.num_rows:  # untied dropped head: pad to the merged vocabulary
            padded = rows.new_zeros(plan.num_rows, *rows.shape[1:])
            padded[plan.old_to_new[plan.head_source_ids()].to(padded.device)] = rows
            rows = padded
        layout = self.layout
        kept = rows.index_select(0, layout.kept_rows.to(rows.device))
        padding = layout.vocab_size - int(layout.kept_rows.numel())
        return torch.cat([kept, kept.new_zeros((padding, *kept.shape[1:]))]) if padding else kept

    def save_tokenizer(self, staging: str | os.PathLike) -> None:
        """Save the renumbered tokenizer (or processor) into the export folder."""
        if self.processor is not None:
            self.processor.save_pretrained(staging)
            if getattr(self.processor, "feature_extractor", None) is not None:
                # transformers 5 nests it in processor_config.json; tools that read the classic file need it too
                self.processor.feature_extractor.save_pretrained(staging)
        elif self.tokenizer is not None:
            self.tokenizer.save_pretrained(staging)


def plain_parts(
    plan: MergePlan,
    model_config: Any,
    generation_config: Any = None,
    tokenizer: Any = None,
    pad_vocab_to_multiple_of: int | None = None,
    *,
    has_head: bool = True,
) -> PlainParts:
    """Work out a plain export's numbering, config, generation config and tokenizer, refusing what cannot export.

    Args:
        plan: The applied plan.
        model_config: The merged (or original) model's config.
        generation_config: Its generation config, or None.
        tokenizer: The original fast tokenizer, or a processor holding one.
        pad_vocab_to_multiple_of: See `export_plain`.
        has_head: Whether the model has an LM head (dropped merged rows are then suppressed).

    Returns:
        The `PlainParts`.

    Raises:
        TokenMergeError: For an `lm_head="keep"` merge, a bad padding multiple, or a merge that removes a token the
            config needs or the BPE alphabet.
    """
    if plan.config.lm_head == "keep":
        raise TokenMergeError(
            "export_plain cannot renumber an lm_head='keep' merge: its LM head still has one row per original id, "
            f"{plan.vocab_size} rows, which a plain checkpoint with vocab_size={plan.num_rows} cannot hold. Fix: merge "
            "with lm_head='merge' (or 'drop') to export, or keep the plugin format (model.save_pretrained)."
        )
    processor = tokenizer if _is_processor(tokenizer) else None
    text_tokenizer = processor.tokenizer if processor is not None else tokenizer
    layout = plain_layout(plan, text_tokenizer, pad_vocab_to_multiple_of)
    plain_tokenizer = rewrite_tokenizer(text_tokenizer, plan, layout) if text_tokenizer is not None else None
    plain_processor = None
    if processor is not None:
        plain_processor = copy.copy(processor)
        plain_processor.tokenizer = plain_tokenizer
    old_to_plain = layout.old_to_plain
    config_dict = remap_token_ids(model_config.to_dict(), old_to_plain)  # refuses a removed config id up front
    generation_dict = (
        remap_token_ids(generation_config.to_dict(), old_to_plain) if generation_config is not None else None
    )
    suppressed = list(layout.padding_ids)
    if has_head and plan.config.lm_head == "drop":
        row_to_plain = torch.full((plan.num_rows,), -1, dtype=torch.long)
        row_to_plain[layout.kept_rows] = torch.arange(layout.kept_rows.numel())
        suppressed += [i for i in row_to_plain[plan.cluster_rows].tolist() if i >= 0]

    config_dict.pop("quantization_config", None)
    config_dict["vocab_size"] = layout.vocab_size
    for key in ("text_config", "decoder"):
        if isinstance(config_dict.get(key), dict) and "vocab_size" in config_dict[key]:
            config_dict[key]["vocab_size"] = layout.vocab_size
    plain_config = type(model_config).from_dict(config_dict)
    plain_generation = None
    if generation_dict is not None:
        if suppressed:
            generation_dict["suppress_tokens"] = sorted(
                set(generation_dict.get("suppress_tokens") or []) | set(suppressed)
            )
        plain_generation = type(generation_config).from_dict(generation_dict)
    return PlainParts(layout, plain_config, plain_generation, plain_tokenizer, plain_processor)
