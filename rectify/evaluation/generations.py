"""Read a generations JSONL (RealToxicityPrompts shape) and the run metadata that travels with it.

Line format: ``{"prompt": {"text": str, "toxicity": float | null, ...}, "generations": [{"text": str}, ...]}``.
Metadata comes from two optional places next to the file: the sidecar ``<generations>.meta.json`` written
by ``scripts/generate.py`` (method, epsilon, dead-end fallback counts, ...) and the Hydra overrides of the
run that wrote it (``.hydra/overrides.yaml`` in the same directory), which tell a report what was swept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rectify.data.jsonl import numbered_lines, parse_object
from rectify.errors import InputError


class GenerationsFormatError(InputError, ValueError):
    """A generations file line does not have the expected shape (the message names file and line)."""


@dataclass
class GenerationSet:
    path: Path
    prompts: list[str]
    prompt_toxicity: list[float | None]
    generations: list[list[str]]  # [n_prompts][k_i]
    lines: list[int]  # 1-based source line of each prompt
    extra: list[list[dict[str, Any]]] = field(default_factory=list)  # per-generation dicts as read

    def __len__(self) -> int:
        return len(self.prompts)

    def flat(self) -> tuple[list[str], list[str], list[int]]:
        """(prompt text, generation text, prompt index) for every generation, in file order."""
        p, g, idx = [], [], []
        for i, gens in enumerate(self.generations):
            for text in gens:
                p.append(self.prompts[i])
                g.append(text)
                idx.append(i)
        return p, g, idx


def _prompt_fields(obj: Any, where: str) -> tuple[str, float | None]:
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        return prompt, None
    if not isinstance(prompt, Mapping) or not isinstance(prompt.get("text"), str):
        raise GenerationsFormatError(f"{where}: 'prompt' must be a string or an object with a 'text' string")
    tox = prompt.get("toxicity")
    if tox is not None and not isinstance(tox, (int, float)):
        raise GenerationsFormatError(f"{where}: prompt.toxicity must be a number or null, got {tox!r}")
    return prompt["text"], None if tox is None else float(tox)


def is_generations_file(path: str | Path) -> bool:
    """True when the first line of ``path`` is a generations record (an object with a ``generations`` list),
    to tell one from value data before reading it as either."""
    for _, where, line in numbered_lines(path):
        try:
            return isinstance(parse_object(line, where, GenerationsFormatError).get("generations"), list)
        except GenerationsFormatError:
            return False
    return False


def read_generations(path: str | Path) -> GenerationSet:
    """Parse a generations JSONL; raises :class:`GenerationsFormatError` naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a directory: pass the generations file in it (e.g. "
                                f"{path / 'generations.jsonl'})")
    if not path.is_file():
        raise FileNotFoundError(f"generations file {path} does not exist")
    out = GenerationSet(path=path, prompts=[], prompt_toxicity=[], generations=[], lines=[], extra=[])
    for lineno, where, line in numbered_lines(path):
        obj = parse_object(line, where, GenerationsFormatError)
        text, tox = _prompt_fields(obj, where)
        gens = obj.get("generations")
        if not isinstance(gens, list) or not gens:
            raise GenerationsFormatError(f"{where}: 'generations' must be a non-empty list")
        texts, extras = [], []
        for j, g in enumerate(gens):
            if isinstance(g, str):
                g = {"text": g}
            if not isinstance(g, Mapping) or not isinstance(g.get("text"), str):
                raise GenerationsFormatError(f"{where}: generation #{j} has no 'text' string")
            texts.append(g["text"])
            extras.append(dict(g))
        out.prompts.append(text)
        out.prompt_toxicity.append(tox)
        out.generations.append(texts)
        out.lines.append(lineno)
        out.extra.append(extras)
    if not out.prompts:
        raise GenerationsFormatError(f"{path}: no generations found (empty file)")
    return out


def meta_path(path: str | Path) -> Path | None:
    """The sidecar metadata file of a generations file, if one exists (``x.jsonl.meta.json`` or ``x.meta.json``)."""
    path = Path(path)
    for cand in (Path(str(path) + ".meta.json"), path.with_suffix(".meta.json")):
        if cand.is_file():
            return cand
    return None


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar metadata as a dict ({} when absent)."""
    mp = meta_path(path)
    if mp is None:
        return {}
    return parse_object(mp.read_text(encoding="utf-8"), str(mp), GenerationsFormatError)


def hydra_overrides_in(dirs: Sequence[Path]) -> list[str]:
    """The overrides list in the first of ``dirs`` holding ``.hydra/overrides.yaml`` ([] when none does)."""
    for d in dirs:
        f = d / ".hydra" / "overrides.yaml"
        if f.is_file():
            from omegaconf import OmegaConf

            return [str(x) for x in OmegaConf.to_container(OmegaConf.load(f)) or []]
    return []


def read_overrides(path: str | Path) -> dict[str, str]:
    """Hydra command-line overrides of the run that wrote ``path`` (``{key: value}``, {} when none)."""
    path = Path(path)
    return parse_overrides(hydra_overrides_in((path.parent, path.parent.parent)))


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["decoding.epsilon=0.1", "+x=1", "~y"]`` -> ``{"decoding.epsilon": "0.1", "x": "1"}``."""
    out = {}
    for item in items:
        item = str(item)
        if item.startswith("~") or "=" not in item:
            continue
        key, value = item.split("=", 1)
        out[key.lstrip("+")] = value
    return out


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": value}``; lists become JSON strings so every value is a scalar."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out
