"""The Perspective client against a fake API on 127.0.0.1: caching, retries on 429/5xx, QPS, errors."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from rectify.scoring import build_scorer
from rectify.scoring.perspective import PerspectiveError, PerspectiveScorer


class FakePerspective:
    """Scores 0.9 for texts containing 'idiot', else 0.1 (INSULT = half of that); can fail N times first."""

    def __init__(self):
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.fail_codes: list[int] = []  # status codes to answer before succeeding
        self.retry_after: str | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                query = parse_qs(urlparse(self.path).query)
                fake.requests.append({"body": body, "key": query.get("key", [None])[0]})
                fake.times.append(time.monotonic())
                if fake.fail_codes:
                    code = fake.fail_codes.pop(0)
                    self.send_response(code)
                    if fake.retry_after:
                        self.send_header("Retry-After", fake.retry_after)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "quota"}}')
                    return
                text = body["comment"]["text"]
                tox = 0.9 if "idiot" in text else 0.1
                values = {"TOXICITY": tox, "INSULT": tox / 2}
                scores = {a: {"summaryScore": {"value": values.get(a, 0.0), "type": "PROBABILITY"}}
                          for a in body["requestedAttributes"]}
                payload = json.dumps({"attributeScores": scores, "languages": ["en"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1alpha1/comments:analyze"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake():
    with FakePerspective() as f:
        yield f


def _client(fake, tmp_path, **kw) -> PerspectiveScorer:
    kw.setdefault("qps", 1000.0)
    kw.setdefault("backoff_base", 0.01)
    return PerspectiveScorer(api_key="k3y", url=fake.url, cache_path=str(tmp_path / "cache.sqlite"), **kw)


def test_scores_and_request_shape(fake, tmp_path):
    s = _client(fake, tmp_path, attributes=["TOXICITY", "INSULT"])
    out = s(["you idiot", "nice day"])
    np.testing.assert_allclose(out, [0.9, 0.1])
    np.testing.assert_allclose(s.scores_all(["you idiot"])["INSULT"], [0.45])
    first = fake.requests[0]
    assert first["key"] == "k3y"
    assert first["body"]["comment"] == {"text": "you idiot"}
    assert set(first["body"]["requestedAttributes"]) == {"TOXICITY", "INSULT"}
    assert first["body"]["doNotStore"] is True


def test_cache_means_a_rerun_makes_no_request(fake, tmp_path):
    texts = ["you idiot", "nice day", "you idiot"]
    a = _client(fake, tmp_path)(texts)
    assert len(fake.requests) == 2  # the duplicate is served from the cache
    # a new client (a rerun, or a resumed crash) on the same cache file: no request at all, no key needed
    rerun = PerspectiveScorer(api_key=None, url=fake.url, cache_path=str(tmp_path / "cache.sqlite"))
    np.testing.assert_array_equal(rerun(texts), a)
    assert len(fake.requests) == 2 and rerun.requests_made == 0
    # a different attribute set is a different cache key
    _client(fake, tmp_path, attributes=["INSULT"])(["you idiot"])
    assert len(fake.requests) == 3


def test_retries_429_and_5xx_with_backoff(fake, tmp_path):
    fake.fail_codes = [429, 503, 429]
    s = _client(fake, tmp_path)
    sleeps: list[float] = []
    s._sleep = lambda d: sleeps.append(d)
    np.testing.assert_allclose(s(["you idiot"]), [0.9])
    assert len(fake.requests) == 4 and s.requests_made == 4
    backoffs = [d for d in sleeps if d >= 0.01]
    assert backoffs == pytest.approx([0.01, 0.02, 0.04])


def test_retry_after_is_honoured(fake, tmp_path):
    fake.fail_codes, fake.retry_after = [429], "0.3"
    s = _client(fake, tmp_path, backoff_max=5.0)
    sleeps: list[float] = []
    s._sleep = lambda d: sleeps.append(d)
    s(["x"])
    assert max(sleeps) == pytest.approx(0.3)


def test_gives_up_after_max_retries(fake, tmp_path):
    fake.fail_codes = [500] * 10
    s = _client(fake, tmp_path, max_retries=2)
    s._sleep = lambda d: None
    with pytest.raises(PerspectiveError, match="giving up after 3 attempts"):
        s(["x"])
    assert len(fake.requests) == 3


def test_client_errors_are_not_retried_and_can_be_skipped(fake, tmp_path):
    fake.fail_codes = [400]
    with pytest.raises(PerspectiveError, match="HTTP 400"):
        _client(fake, tmp_path)(["x"])
    assert len(fake.requests) == 1
    fake.fail_codes = [400]
    out = _client(fake, tmp_path, skip_errors=True)(["y", "you idiot"])
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.9)


def test_qps_limit(fake, tmp_path):
    s = _client(fake, tmp_path, qps=20.0)
    start = time.monotonic()
    s([f"text {i}" for i in range(5)])
    assert time.monotonic() - start >= 4 / 20 - 0.01
    gaps = np.diff(fake.times)
    assert gaps.min() >= 1 / 20 - 0.01


def test_empty_text_and_missing_key(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    s = PerspectiveScorer(url=fake.url, cache_path=str(tmp_path / "c.sqlite"))
    assert s(["", "  "]).tolist() == [0.0, 0.0] and not fake.requests
    with pytest.raises(PerspectiveError, match="PERSPECTIVE_API_KEY"):
        s(["hello"])
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "from-env")
    s2 = PerspectiveScorer(url=fake.url, cache_path=str(tmp_path / "c.sqlite"), qps=1000)
    s2(["hello"])
    assert fake.requests[-1]["key"] == "from-env"


def test_hydra_config_builds(fake, tmp_path):
    from pathlib import Path

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "scorer" / "perspective.yaml")
    cfg.url, cfg.cache_path, cfg.api_key, cfg.qps = fake.url, str(tmp_path / "c.sqlite"), "abc", 1000.0
    s = build_scorer(cfg)
    assert s.name == "perspective" and s.labels == ("TOXICITY",)
    assert s(["you idiot"])[0] == pytest.approx(0.9)
