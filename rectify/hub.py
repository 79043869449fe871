"""Publish a saved directory (a Q_D with its model card) as a Hugging Face Hub model repo.

Kept apart from :mod:`rectify.value_model` so the network code is one function, and an exported
``value_model/`` dir (whose card already names its data and AUC) can be pushed as it is:
``python -m rectify.hub outputs/train/runs/<run>/value_model user/my-qd``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
