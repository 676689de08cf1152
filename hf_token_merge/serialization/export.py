"""`export_plain`: write a merged model as an ordinary transformers checkpoint with a smaller vocabulary.

The plugin format keeps the original id space through index maps. The plain export renumbers instead:
merged row r becomes token id r, `vocab_size` shrinks, every id in the config and generation config is
remapped, and the tokenizer is rewritten so that every member of a merged cluster encodes to the merged id
and the merged id decodes to the cluster's representative. It loads with plain transformers, no import of
hf_token_merge, and its greedy output matches the in-place merged model with `logit_correction='none'`
(a plain model has one logit per merged row, so a correction cannot be carried over).
"""

from __future__ import annotations

import copy
import json
import os
import re
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
    `bad_words_ids`, Whisper's `lang_to_id`/`task_to_id`, and nested sub-configs.

    Args:
        config: A `to_dict()` of a model or generation config.
        old_to_new: `(vocab_size,)` merged id of every original id.

    Returns:
        The remapped dict.
    """
    table = old_to_new.tolist()

    def ids(value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return table[value] if 0 <= value < len(table) else value
        if isinstance(value, list):
            return [ids(v) for v in value]
        return value

    remapped: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key in _ID_MAP_KEYS:
            remapped[key] = {name: ids(v) for name, v in value.items()}
        elif isinstance(value, dict):
            remapped[key] = remap_token_ids(value, old_to_new)
        elif _is_id_key(key) or key in _ID_LIST_KEYS or key == "bad_words_ids":
            remapped[key] = ids(value)
        elif key == "forced_decoder_ids" and value is not None:
            remapped[key] = [[position, ids(token)] for position, token in value]
        else:
            remapped[key] = value
    return remapped


def rewrite_tokenizer(tokenizer: Any, plan: MergePlan) -> Any:
    """Renumber a fast tokenizer to merged ids.

    Unmerged tokens keep their string and get their merged id. In each cluster the representative keeps
    its string; the other members' strings are removed from the added vocabulary and rewritten to the
    representative by a `Replace` normaliser, so they still encode to the merged id.

    Args:
        tokenizer: A transformers fast tokenizer of the original model.
        plan: The applied plan.

    Returns:
        A new tokenizer of the same class over merged ids.

    Raises:
        TokenMergeError: When a merged token lives in the base (BPE/WordPiece) vocabulary rather than among
            the added tokens; such a merge is only available in the plugin format.
    """
    from tokenizers import Regex, Tokenizer, normalizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TokenMergeError("export_plain rewrites fast tokenizers only; load the tokenizer with use_fast=True.")
    state = json.loads(backend.to_str())
    table = plan.old_to_new.tolist()
    added_ids = {entry["id"] for entry in state["added_tokens"]}
    in_base = sorted(set(plan.selected_ids.tolist()) - added_ids)
    if in_base:
        raise TokenMergeError(
            f"Merged ids {in_base[:5]} are in the tokenizer's base vocabulary, which a plain tokenizer cannot map "
            "many-to-one; keep the plugin format (save_pretrained) for this merge."
        )

    representatives = set(plan.representative_ids.tolist())
    selected = set(plan.selected_ids.tolist())
    id_to_content = {entry["id"]: entry["content"] for entry in state["added_tokens"]}
    rewrites: list[tuple[str, str]] = []
    for cluster, representative in enumerate(plan.representative_ids.tolist()):
        others = [id_to_content[i] for i in plan.members(cluster).tolist() if i != representative]
        if others:
            pattern = "|".join(re.escape(text) for text in others)
            rewrites.append((pattern, id_to_content[representative]))

    added = []
    for entry in state["added_tokens"]:
        old_id = entry["id"]
        if old_id in selected and old_id not in representatives:
            continue
        entry = dict(entry, id=table[old_id])
        if old_id in representatives and rewrites:
            entry["normalized"] = True  # matched after the Replace normaliser has rewritten its mates
        added.append(entry)
    state["added_tokens"] = added

    vocab = state["model"].get("vocab")
    if isinstance(vocab, dict):
        state["model"]["vocab"] = {token: table[i] if i < len(table) else i for token, i in vocab.items()}
    elif isinstance(vocab, list):  # Unigram: a list of [piece, score] in id order; merged ids are added tokens
        pass
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


def export_plain(
    model: nn.Module,
    plan: MergePlan,
    save_directory: str | os.PathLike,
    tokenizer: Any = None,
    *,
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
        tokenizer: The original fast tokenizer; rewritten to merged ids when given.
        overwrite: Replace `save_directory` even when it is a non-empty folder hf_token_merge did not write.

    Returns:
        The output folder.

    Raises:
        TokenMergeError: For an unmerged model, a plan of another merge, an `lm_head="keep"` merge, or a
            `save_directory` that `check_target` refuses; all before anything is written.
    """
    embedding_name, embedding, head_name, head = _merged_modules(model)
    if not torch.equal(embedding.index_map.cpu().long(), plan.old_to_new):
        raise TokenMergeError("The plan does not match the model's merged embedding; pass result.plan of this merge.")
    if plan.config.lm_head == "keep":
        raise TokenMergeError(
            "export_plain cannot renumber an lm_head='keep' merge: its LM head still has one row per original id, "
            f"{plan.vocab_size} rows, which a plain checkpoint with vocab_size={plan.num_rows} cannot hold. Fix: merge "
            "with lm_head='merge' (or 'drop') to export, or keep the plugin format (model.save_pretrained)."
        )
    plain_tokenizer = rewrite_tokenizer(tokenizer, plan) if tokenizer is not None else None
    check_target(save_directory, overwrite=overwrite)
    num_rows = plan.num_rows
    old_to_new = plan.old_to_new

    state = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if not name.endswith((".index_map", ".logit_offset"))
    }
    suppressed: list[int] = []
    if head is not None and head.out_features != num_rows:  # untied dropped head: pad to the merged vocabulary
        padded = head.weight.new_zeros(num_rows, head.in_features)
        source = plan.head_source_ids()
        padded[old_to_new[source].to(padded.device)] = head.weight.detach()
        state[f"{head_name}.weight"] = padded
        if head.bias is not None:
            bias = head.bias.new_zeros(num_rows)
            bias[old_to_new[source].to(bias.device)] = head.bias.detach()
            state[f"{head_name}.bias"] = bias
    if head is not None and plan.config.lm_head == "drop":
        suppressed = plan.cluster_rows.tolist()

    config_dict = remap_token_ids(model.config.to_dict(), old_to_new)
    config_dict.pop("quantization_config", None)
    config_dict["vocab_size"] = num_rows
    for key in ("text_config", "decoder"):
        if isinstance(config_dict.get(key), dict) and "vocab_size" in config_dict[key]:
            config_dict[key]["vocab_size"] = num_rows
    plain_config = type(model.config).from_dict(config_dict)

    with torch.device("meta"):
        plain = type(model)(plain_config)
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    missing = [name for name, p in plain.named_parameters() if p.device.type == "meta"]
    if missing:
        raise RuntimeError(f"export_plain could not fill {missing[:5]}; please report this model class.")

    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_dict = remap_token_ids(generation_config.to_dict(), old_to_new)
        if suppressed:
            generation_dict["suppress_tokens"] = sorted(
                set(generation_dict.get("suppress_tokens") or []) | set(suppressed)
            )
        plain.generation_config = type(generation_config).from_dict(generation_dict)

    with atomic_directory(save_directory, overwrite=overwrite) as staging:
        plain.save_pretrained(staging)
        if plain_tokenizer is not None:
            plain_tokenizer.save_pretrained(staging)
    return os.fspath(save_directory)
