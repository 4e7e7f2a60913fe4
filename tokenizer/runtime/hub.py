"""Where a checkpoint comes from: a local folder or file, or a Hugging Face Hub model repo.

Every loader and every command takes a *source* string:

- a path that exists is used as it is (a folder we saved, a released `pytorch_model.bin`);
- `ORG/NAME`, or `ORG/NAME@REVISION` (a branch, tag or commit), is a Hub model repo. It is
  fetched with huggingface_hub's `snapshot_download` into the Hub cache, so the cache
  (`HF_HUB_CACHE` or `cache_dir`), `HF_HUB_OFFLINE=1`, tokens and revisions behave as in
  every other Hugging Face library: a repo fetched once loads offline by its id.

Offline, a repo that is not in the cache is one error naming both ways out: fetch it into
the cache where there is network (`hf download ORG/NAME`), or fetch it to a folder
(`hf download ORG/NAME --local-dir DIR`) and pass the folder.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from tokenizer.runtime.errors import CheckpointError

# Hub repo ids are `namespace/name` of letters, digits, '-', '_' and '.'; a revision may follow '@'.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$", re.ASCII)
_PATH_PREFIXES = (".", "/", "~")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".yaml", ".json")


def split_revision(source: str) -> tuple[str, str | None]:
    """`ORG/NAME@REV` -> (`ORG/NAME`, `REV`); anything else -> (source, None)."""
    name, sep, revision = str(source).partition("@")
    return (name, revision) if sep and revision else (str(source), None)


def is_repo_id(source: str | Path) -> bool:
    """True when `source` names a Hub repo rather than a local path: it does not exist on disk, does not start
    like a path, is a valid repo id (one '/', the Hub's characters), does not end like a weights or config
    file, and its first part is not a local folder (`runs/missing` is a missing path, not a repo of `runs`)."""
    text = str(source)
    if isinstance(source, Path) or text.startswith(_PATH_PREFIXES) or Path(text).expanduser().exists():
        return False
    name, _ = split_revision(text)
    if not _REPO_ID.match(name) or name.lower().endswith(_WEIGHT_SUFFIXES) or Path(name).parent.is_dir():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def existing_source(source: str, what: str, hint: str = "neither a local path nor a Hub repo id ORG/NAME") -> str:
    """`source` when it is a Hub id or an existing path; a missing path is one CheckpointError naming it and `hint`,
    the way out. The one existence check behind every checkpoint a command takes."""
    if not is_repo_id(source) and not Path(source).expanduser().exists():
        raise CheckpointError(f"{what} {source} does not exist ({hint})")
    return source


def resolve(source: str | Path, what: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The local folder or file behind `source`, fetching a Hub repo into the cache when needed (its snapshot folder).

    `revision` overrides an `@REV` in the source; `cache_dir` overrides HF_HUB_CACHE. Raises CheckpointError
    with one sentence for a missing path, a repo that is not cached while offline, a gated repo without
    access, or a repo or revision that does not exist.
    """
    if not is_repo_id(source):
        return Path(existing_source(str(source), what)).expanduser()
    repo_id, tagged = split_revision(str(source))
    return Path(_snapshot(repo_id, what, revision or tagged, cache_dir))


def _snapshot(repo_id: str, what: str, revision: str | None, cache_dir: str | Path | None) -> str:
    at = f" at revision {revision}" if revision else ""
    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir) if cache_dir else None)
    except GatedRepoError:
        raise CheckpointError(
            f"{what} {repo_id} is gated: accept its license at https://huggingface.co/{repo_id} and log in "
            f"(`hf auth login`), or pass a local copy made where you have access (`{fetch} --local-dir DIR`)"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{what} {repo_id} has no revision {revision!r} on the Hub") from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{what} {repo_id!r} is neither a local path nor a model repo on the Hub (a mistyped path? a private repo? "
            "log in with `hf auth login`)"
        ) from None
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{what} {repo_id}{at} is no local path, and as a Hub id it is not in the Hugging Face cache while the "
            f"Hub cannot be reached (offline, or HF_HUB_OFFLINE=1): run `{fetch}` where there is network to fill the "
            f"cache, or `{fetch} --local-dir DIR` and pass DIR instead of the id"
        ) from None
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointError(
            f"cannot fetch {what} {repo_id}{at} from the Hub: {' '.join(str(err).split())[:300]}"
        ) from None


def push_folder(
    save: Callable[[Path], None],
    repo_id: str,
    what: str,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Save with `save(folder)` into a temporary folder and upload it as the whole content of model repo `repo_id`
    (created when missing); returns the commit's URL. What is uploaded loads back by `from_pretrained(repo_id)`."""
    api = HfApi(token=token)
    folder = Path(tempfile.mkdtemp(prefix="deltaworld-push-"))
    try:
        save(folder)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {what}",
            repo_type="model",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return str(getattr(commit, "commit_url", commit))
