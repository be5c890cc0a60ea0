"""Former path of :mod:`csaws_tools.execution.manifests`, kept so existing imports work."""

from __future__ import annotations

from .execution.manifests import (
    SHARD_NAME,
    MissingShardWarning,
    ShardFile,
    default_merged_path,
    find_shard_manifests,
    merge_manifests,
    summarize_manifest,
)

__all__ = [
    "SHARD_NAME",
    "MissingShardWarning",
    "ShardFile",
    "find_shard_manifests",
    "default_merged_path",
    "merge_manifests",
    "summarize_manifest",
]
