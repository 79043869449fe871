"""Publish a saved directory (a Q_D with its model card) as a Hugging Face Hub model repo.

Kept apart from :mod:`rectify.value_model` so the network code is one function, and an exported
``value_model/`` dir (whose card already names its data and AUC) can be pushed as it is:
``python -m rectify.hub outputs/train/runs/<run>/value_model user/my-qd``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub's host accepts a connection. Offline, transformers spends about 50 s on
    retries before it says so; a load that knows the Hub is unreachable reads the local cache only and fails
    in a second. Behind a proxy (``HTTPS_PROXY``) a direct connection proves nothing: the Hub counts as up."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout_s).close()
        return True
    except OSError as exc:
        log.warning("the Hugging Face Hub (%s) is unreachable (%s): Hub models load from the local cache only",
                    url.hostname, exc)
        return False


def hub_load_kwargs(name_or_path: str | Path) -> dict[str, bool]:
    """``from_pretrained`` keyword arguments for ``name_or_path``: ``local_files_only`` for a Hub name while the
    Hub is unreachable; nothing for a local directory."""
    if Path(name_or_path).is_dir() or hub_reachable():
        return {}
    return {"local_files_only": True}


class HubPushError(RuntimeError):
    """The upload failed; the message says the likely causes."""


def push_dir(directory: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
             commit_message: str = "Upload rectify Q_D value model", revision: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload every file of ``directory``; returns the commit URL."""
    from huggingface_hub import HfApi

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(directory),
                                 commit_message=commit_message, revision=revision)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises HTTP, auth and connection errors
        raise HubPushError(
            f"could not push {directory} to the Hub repo {repo_id!r} ({type(exc).__name__}: {exc}).\n"
            "Check the network, and log in first (`huggingface-cli login` or HF_TOKEN) with write access."
        ) from exc
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Upload a saved Q_D directory (with its README.md card) to the Hub.")
    parser.add_argument("directory")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    print(push_dir(args.directory, args.repo_id, private=args.private or None))


if __name__ == "__main__":
    main()
