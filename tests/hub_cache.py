"""A Hugging Face Hub cache laid out on disk as huggingface_hub writes it, for loading by id offline.

    <cache>/models--ORG--NAME/blobs/<sha256>
    <cache>/models--ORG--NAME/snapshots/<commit>/<file> -> ../../blobs/<sha256>
    <cache>/models--ORG--NAME/refs/<revision>  (holds <commit>)

The loaders then go through huggingface_hub's own cache resolution (snapshot_download with
HF_HUB_OFFLINE), not through a stand-in.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import huggingface_hub.constants
import pytest


def add_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main") -> Path:
    """Put `files` (name in the repo -> content) in the cache as `repo_id` at `revision`; returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode() + b"".join(sorted(files.values()))).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def add_folder(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """A folder (e.g. written by save_pretrained) as the content of repo `repo_id`."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return add_repo(cache, repo_id, files, revision)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache that every loader uses, with HF_HUB_OFFLINE=1 (huggingface_hub reads both at import,
    so the module's values are set too)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache
