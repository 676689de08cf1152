"""Shipping merged models: model cards and `push_to_hub`."""

from hf_token_merge.hub.card import CardRow, build_model_card
from hf_token_merge.hub.push import push_folder, push_to_hub, stage_folder

__all__ = ["CardRow", "build_model_card", "push_folder", "push_to_hub", "stage_folder"]
