"""``perspective``: a Perspective API client for users who have a key (the paper's evaluator).

What makes it safe to run on tens of thousands of generations:
- an on-disk sqlite cache keyed by sha256(text) + the requested attributes + languages, written after every
  response, so a rerun (or a run resumed after a crash) never pays for a text twice;
- a QPS limit (the default quota is 1 request/s) and retries with exponential backoff (honouring
  ``Retry-After``) on 429, 5xx and network errors;
- all attributes configurable (TOXICITY, SEVERE_TOXICITY, INSULT, PROFANITY, THREAT, IDENTITY_ATTACK, ...);
  ``__call__`` returns ``score_attribute``, ``scores_all`` every requested one.
Empty or whitespace-only texts are scored 0 without a request (the API rejects them).
The API key comes from ``api_key`` or the ``PERSPECTIVE_API_KEY`` environment variable, and is only required
when a request has to be made: a fully cached run works without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rectify.scoring.base import Scorer

DEFAULT_URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class PerspectiveError(RuntimeError):
    """The API refused a request for a reason retrying cannot fix, or retries ran out."""


def _default_cache_path() -> Path:
    root = Path(os.environ.get("RECTIFY_CACHE", Path.home() / ".cache" / "rectify"))
    return root / "perspective" / "cache.sqlite"


class PerspectiveCache:
    """sqlite map: key -> JSON of {attribute: score}. One commit per entry, so a crash loses at most one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, scores TEXT NOT NULL)")
        self._db.commit()

    @staticmethod
    def key(text: str, attributes: Sequence[str], languages: Sequence[str]) -> str:
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{h}|{','.join(sorted(attributes))}|{','.join(languages)}"

    def get(self, key: str) -> dict[str, float] | None:
        with self._lock:
            row = self._db.execute("SELECT scores FROM scores WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, scores: dict[str, float]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO scores (key, scores) VALUES (?, ?)", (key, json.dumps(scores)))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class PerspectiveScorer(Scorer):
    name = "perspective"

    def __init__(
        self,
        api_key: str | None = None,
        attributes: Sequence[str] = ("TOXICITY",),
        score_attribute: str | None = None,
        languages: Sequence[str] = ("en",),
        qps: float = 1.0,
        max_retries: int = 8,
        backoff_base: float = 1.0,
        backoff_max: float = 64.0,
        timeout: float = 30.0,
        cache_path: str | None = None,
        url: str = DEFAULT_URL,
        do_not_store: bool = True,
        skip_errors: bool = False,
        batch_size: int = 64,
        progress: bool | None = None,
    ):
        super().__init__(batch_size=batch_size, progress=progress, progress_min=20)
        self.attributes = tuple(a.upper() for a in attributes)
        if not self.attributes:
            raise ValueError("perspective: attributes must not be empty")
        self.labels = self.attributes
        self.label = (score_attribute or self.attributes[0]).upper()
        if self.label not in self.attributes:
            raise ValueError(f"score_attribute {self.label!r} is not among the requested {self.attributes}")
        if qps <= 0:
            raise ValueError(f"qps must be > 0, got {qps}")
        self.api_key = api_key or os.environ.get("PERSPECTIVE_API_KEY")
        self.languages = tuple(languages)
        self.min_interval = 1.0 / float(qps)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.timeout = float(timeout)
        self.url = url
        self.do_not_store = bool(do_not_store)
        self.skip_errors = bool(skip_errors)
        self.cache = PerspectiveCache(cache_path or _default_cache_path())
        self.requests_made = 0  # HTTP requests sent, retries included (for tests and cost reports)
        self._last_request = -float("inf")
        self._sleep = time.sleep
        self._clock = time.monotonic

    # -- scoring ------------------------------------------------------------------------------------------
    def _score_batch_all(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), len(self.attributes)), dtype=np.float64)
        for i, text in enumerate(texts):
            scores = self.score_one(text)
            out[i] = [scores.get(a, np.nan) for a in self.attributes]
        return out

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        return self._score_batch_all(texts)[:, self.attributes.index(self.label)]

    def score_one(self, text: str) -> dict[str, float]:
        """{attribute: score} for one text, from the cache or one (retried) API call."""
        if not text.strip():
            return {a: 0.0 for a in self.attributes}
        key = PerspectiveCache.key(text, self.attributes, self.languages)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        try:
            scores = self._request(text)
        except PerspectiveError:
            if self.skip_errors:
                return {a: float("nan") for a in self.attributes}
            raise
        self.cache.put(key, scores)
        return scores

    # -- HTTP -----------------------------------------------------------------------------------------------
    def _throttle(self) -> None:
        wait = self._last_request + self.min_interval - self._clock()
        if wait > 0:
            self._sleep(wait)
        self._last_request = self._clock()

    def _request(self, text: str) -> dict[str, float]:
        if not self.api_key:
            raise PerspectiveError(
                "perspective: no API key; set scorer.api_key or the PERSPECTIVE_API_KEY environment variable"
            )
        body = {
            "comment": {"text": text},
            "requestedAttributes": {a: {} for a in self.attributes},
            "languages": list(self.languages),
            "doNotStore": self.do_not_store,
        }
        data = json.dumps(body).encode("utf-8")
        url = f"{self.url}?{urllib.parse.urlencode({'key': self.api_key})}"
        last_error = ""
        for attempt in range(self.max_retries + 1):
            self._throttle()
            self.requests_made += 1
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            retry_after = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return self._parse(json.loads(resp.read().decode("utf-8")))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                last_error = f"HTTP {e.code}: {detail}"
                if e.code not in RETRY_STATUS:
                    raise PerspectiveError(f"perspective: {last_error}") from None
                retry_after = e.headers.get("Retry-After") if e.headers else None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last_error = f"network error: {e}"
            if attempt < self.max_retries:
                self._sleep(self._backoff(attempt, retry_after))
        raise PerspectiveError(f"perspective: giving up after {self.max_retries + 1} attempts; last: {last_error}")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2.0**attempt))
        if retry_after:
            try:
                delay = max(delay, min(self.backoff_max, float(retry_after)))
            except ValueError:
                pass
        return delay

    def _parse(self, payload: dict) -> dict[str, float]:
        try:
            scores = payload["attributeScores"]
            return {a: float(scores[a]["summaryScore"]["value"]) for a in self.attributes}
        except (KeyError, TypeError, ValueError) as e:
            raise PerspectiveError(f"perspective: unexpected response {json.dumps(payload)[:300]}") from e
