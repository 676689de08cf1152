"""The merge configuration, in the style of peft's configs.

Every field carries `help` metadata, every combination is validated in `__post_init__`, and the config
round-trips through `to_dict`/`from_dict` and `save_pretrained`/`from_pretrained` (JSON).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from hf_token_merge.config.field_types import check_field_types
from hf_token_merge.config.json_config import JsonConfigMixin
from hf_token_merge.config.selection_fields import validate_selection_fields
from hf_token_merge.errors import TokenMergeError

CONFIG_NAME = "token_merge_config.json"

Metric = Literal["cosine", "euclidean"]
Method = Literal["threshold", "kmeans", "agglomerative", "frequency", "random"]
SimilaritySource = Literal["input", "output", "both"]
MergeRule = Literal["mean", "weighted_mean", "medoid"]
LMHeadMode = Literal["merge", "keep", "drop"]
LogitCorrection = Literal["none", "uniform", "frequency"]

_CHOICES = {
    "metric": ("cosine", "euclidean"),
    "method": ("threshold", "kmeans", "agglomerative", "frequency", "random"),
    "similarity_source": ("input", "output", "both"),
    "merge_rule": ("mean", "weighted_mean", "medoid"),
    "lm_head": ("merge", "keep", "drop"),
    "logit_correction": ("none", "uniform", "frequency"),
}
# Exactly one of these says how far to merge; recipes and the CLI replace them as one unit.
STOPPING_FIELDS = ("similarity_threshold", "distance_threshold", "n_clusters", "target_ratio")


def replace_stop(settings: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`settings` updated with `changes`, where a new stopping option replaces the old one (there is exactly one).

    Args:
        settings: `TokenMergeConfig` fields (e.g. a recipe's `merge` mapping or `config.to_dict()`).
        changes: Fields to set; a non-None stopping option among them clears the others from `settings`.

    Returns:
        A new dict (the inputs are left unchanged).
    """
    result = dict(settings)
    if any(changes.get(name) is not None for name in STOPPING_FIELDS):
        for name in STOPPING_FIELDS:
            result.pop(name, None)
    result.update(changes)
    return result


@dataclass
class TokenMergeConfig(JsonConfigMixin):
    """Configuration of a vocabulary merge.

    Rows are selected by the union of `token_ids`, `token_id_range`, `token_pattern` and `preset`.
    Exactly one stopping option says how far to merge: `similarity_threshold` (cosine),
    `distance_threshold` (euclidean), `n_clusters` or `target_ratio`.

    Example:
        >>> TokenMergeConfig(preset="llasa", target_ratio=0.125)  # 65,536 speech rows -> 8,192
    """

    config_file_name: ClassVar[str] = CONFIG_NAME

    # --- which rows may merge ---------------------------------------------------------------------
    token_ids: list[int] | None = field(default=None, metadata={"help": "Explicit token ids that may merge."})
    token_id_range: tuple[int, int] | None = field(
        default=None,
        metadata={"help": "Half-open id range [start, end) that may merge, e.g. (128264, 193800) for Llasa."},
    )
    token_pattern: str | None = field(
        default=None,
        metadata={
            "help": "Regular expression matched in full against every token string of the tokenizer, "
            r"e.g. '<\|s_\d+\|>' (Llasa), '<custom_token_\d+>' (Orpheus), '\[Hu\d+\]' (SpiritLM). "
            "Needs a tokenizer at planning time."
        },
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Named speech-token selection of a model family (see `hf_token_merge.selection.PRESETS`), "
            "e.g. 'llasa', 'orpheus', 'spark_tts', 'spiritlm'."
        },
    )
    exclude_token_ids: list[int] | None = field(
        default=None, metadata={"help": "Ids never merged, even when a selector matches them."}
    )
    exclude_pattern: str | None = field(
        default=None,
        metadata={
            "help": "Regex over token strings; matching tokens are never merged (e.g. a family's control tokens "
            "that share the speech-token naming). Needs a tokenizer at planning time."
        },
    )
    allow_special_tokens: bool = field(
        default=False,
        metadata={"help": "Let special tokens (bos/eos/pad/unk and the tokenizer's special tokens) be merged."},
    )
    partition_size: int | None = field(
        default=None,
        metadata={
            "help": "Cluster the selected ids in consecutive blocks of this many (in id order) and never merge "
            "across blocks, e.g. 4096 for Orpheus' 7 SNAC position blocks, so that every merged id still decodes "
            "to a code of its own position. n_clusters is shared among blocks in proportion to their size."
        },
    )
    # --- similarity and grouping ------------------------------------------------------------------
    metric: Metric = field(default="cosine", metadata={"help": "Row similarity: 'cosine' or 'euclidean'."})
    method: Method = field(
        default="kmeans",
        metadata={
            "help": "Grouping: 'threshold' (greedy leader clustering: every member is within the threshold of "
            "its cluster's leader), 'kmeans' (Lloyd's k-means to a target count), 'agglomerative' "
            "(exact average linkage; keeps an N x N matrix, so at most `agglomerative_max_rows` rows) or "
            "'frequency' (not by similarity: the k - 1 most frequent selected ids in the calibration counts keep "
            "rows of their own and all others share one row, which greedy decoding practically never emits; "
            "needs token_counts) or 'random' (a random grouping into the target count, seeded by `seed`: the control "
            "of sweeps and budget searches)."
        },
    )
    similarity_threshold: float | None = field(
        default=None,
        metadata={"help": "Stop at this cosine similarity in [-1, 1] (metric='cosine' only)."},
    )
    distance_threshold: float | None = field(
        default=None,
        metadata={"help": "Stop at this Euclidean distance >= 0 (metric='euclidean' only)."},
    )
    n_clusters: int | None = field(
        default=None, metadata={"help": "Merge the selected rows into exactly this many rows."}
    )
    target_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Merged rows / selected rows, in (0, 1]: 0.125 merges 65,536 rows into 8,192. "
            "The count is rounded up."
        },
    )
    similarity_source: SimilaritySource = field(
        default="input",
        metadata={
            "help": "Which weights define similarity: 'input' (embedding rows), 'output' (LM-head rows) or "
            "'both' (the two rows side by side; for cosine each half is normalised first)."
        },
    )
    # --- how merged rows are built and behave ----------------------------------------------------
    merge_rule: MergeRule = field(
        default="mean",
        metadata={
            "help": "How a merged row is built: 'mean', 'weighted_mean' (weighted by calibration token counts) "
            "or 'medoid' (the member row closest to all others)."
        },
    )
    lm_head: LMHeadMode = field(
        default="merge",
        metadata={
            "help": "LM-head rows of merged tokens: 'merge' (like the input rows), 'keep' (untouched; untied "
            "models only) or 'drop' (the tokens can no longer be generated: input-only tokens, as in "
            "speech-in/text-out ASR)."
        },
    )
    logit_correction: LogitCorrection = field(
        default="uniform",
        metadata={
            "help": "How a merged output row's probability is shared among its members in the original id "
            "space: 'none' (every member gets the cluster's logit), 'uniform' (split evenly; probabilities over "
            "the original vocabulary equal the merged model's), 'frequency' (split by calibration counts)."
        },
    )
    compact_logits: bool = field(
        default=False,
        metadata={
            "help": "Return logits over the merged rows instead of the original vocabulary (faster; "
            "`generate()` and `labels=` then need merged ids). Needs lm_head='merge'."
        },
    )
    # --- numerics ---------------------------------------------------------------------------------
    seed: int = field(default=0, metadata={"help": "Seed of k-means initialisation and of method='random'."})
    max_iter: int = field(default=25, metadata={"help": "Maximum k-means iterations."})
    tol: float = field(
        default=1e-3,
        metadata={"help": "k-means stops once at most this fraction of rows change cluster in an iteration."},
    )
    projection_dim: int | None = field(
        default=256,
        metadata={
            "help": "k-means searches in a PCA projection of this many dimensions when rows are wider, then "
            "assigns every row once more in the full space. None searches in the full space (slower)."
        },
    )
    block_size: int = field(
        default=4096,
        metadata={"help": "Rows per block in similarity computations; no N x N matrix is ever built."},
    )
    agglomerative_max_rows: int = field(
        default=16384,
        metadata={"help": "Refuse agglomerative clustering above this many selected rows (N x N memory)."},
    )
    # --- where the embeddings live ---------------------------------------------------------------
    input_embedding_name: str | None = field(
        default=None,
        metadata={
            "help": "Dotted module path of the input embedding when `model.get_input_embeddings()` does not "
            "find it (custom layer names)."
        },
    )
    output_embedding_name: str | None = field(
        default=None,
        metadata={"help": "Dotted module path of the LM head when `model.get_output_embeddings()` does not find it."},
    )

    def __post_init__(self) -> None:
        check_field_types(self)  # first: every later check assumes the annotated types
        self._validate()

    def _validate(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise TokenMergeError(f"{name}={value!r} is not supported; choose one of {list(choices)}.")

        validate_selection_fields(self, required=True)
        self._validate_stopping()

        if self.compact_logits and self.lm_head != "merge":
            # A kept head has no merged rows; a dropped head's rows are not the embedding's rows, so compact
            # ids could not be fed back into the model.
            raise TokenMergeError(
                f"compact_logits=True needs lm_head='merge' (got {self.lm_head!r}): only then is compact id r the "
                "merged embedding row r. Use compact_logits=False."
            )
        if self.partition_size is not None and self.partition_size < 1:
            raise TokenMergeError(f"partition_size must be >= 1 or None, got {self.partition_size}.")
        if self.max_iter < 1:
            raise TokenMergeError(f"max_iter must be >= 1, got {self.max_iter}.")
        if not 0.0 <= self.tol < 1.0:
            raise TokenMergeError(f"tol must lie in [0, 1), got {self.tol}.")
        if self.block_size < 1:
            raise TokenMergeError(f"block_size must be >= 1, got {self.block_size}.")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise TokenMergeError(f"projection_dim must be >= 1 or None, got {self.projection_dim}.")

    def _validate_stopping(self) -> None:
        given = [name for name in STOPPING_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            problem = "none is set" if not given else f"{given} are all set"
            raise TokenMergeError(
                "Set exactly one stopping option of similarity_threshold (cosine), distance_threshold "
                f"(euclidean), n_clusters or target_ratio; {problem}."
            )
        stop = given[0]
        if stop == "similarity_threshold":
            if self.metric != "cosine":
                raise TokenMergeError(
                    "similarity_threshold is a cosine similarity; with metric='euclidean' set "
                    "distance_threshold instead."
                )
            if not -1.0 <= self.similarity_threshold <= 1.0:
                raise TokenMergeError(f"similarity_threshold must lie in [-1, 1], got {self.similarity_threshold}.")
        if stop == "distance_threshold":
            if self.metric != "euclidean":
                raise TokenMergeError(
                    "distance_threshold is a Euclidean distance; with metric='cosine' set similarity_threshold instead."
                )
            if self.distance_threshold < 0:
                raise TokenMergeError(f"distance_threshold must be >= 0, got {self.distance_threshold}.")
        if stop == "n_clusters" and self.n_clusters < 1:
            raise TokenMergeError(f"n_clusters must be >= 1, got {self.n_clusters}.")
        if stop == "target_ratio" and not 0.0 < self.target_ratio <= 1.0:
            raise TokenMergeError(f"target_ratio must lie in (0, 1], got {self.target_ratio}.")

        threshold_stop = stop in ("similarity_threshold", "distance_threshold")
        if self.method == "threshold" and not threshold_stop:
            raise TokenMergeError(
                f"method='threshold' stops at a threshold, but {stop} is set; set similarity_threshold "
                "(cosine) or distance_threshold (euclidean), or use method='kmeans'."
            )
        if self.method in ("kmeans", "frequency", "random") and threshold_stop:
            raise TokenMergeError(
                f"method='{self.method}' needs n_clusters or target_ratio, but {stop} is set; "
                "use method='threshold' or 'agglomerative' to stop at a threshold."
            )

    @property
    def needs_token_counts(self) -> bool:
        """Whether planning needs calibration counts (method/logit_correction 'frequency', 'weighted_mean')."""
        return self.method == "frequency" or self.logit_correction == "frequency" or self.merge_rule == "weighted_mean"

    def with_stop(self, **changes: Any) -> TokenMergeConfig:
        """A copy with a new stopping option (which replaces the old one) and any other field changes.

        Example:
            >>> config.with_stop(n_clusters=64, method="kmeans")  # whatever stopped the merge before

        Args:
            **changes: `TokenMergeConfig` fields; a stopping option among them replaces the current one.

        Returns:
            A new, validated config.
        """
        return type(self).from_dict(replace_stop(self.to_dict(), changes))

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-serialisable dict."""
        data = asdict(self)
        if data["token_id_range"] is not None:
            data["token_id_range"] = list(data["token_id_range"])
        return data
