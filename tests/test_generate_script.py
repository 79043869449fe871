"""scripts/generate.py: prompt formats, the debug=smoke config, and resuming without duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rectify.decoding.io import PromptFileError, prepare_resume, read_prompts
from rectify.decoding.runner import run_generation

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Hello there", "You are a", "Why", "The weather today is"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smoke_cfg(tmp_path: Path, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("generate", overrides=["debug=smoke", f"prompts_path={tmp_path / 'p.jsonl'}",
                                              f"output_path={out}", f"paths.output_dir={tmp_path}", *overrides])


@pytest.fixture()
def prompt_file(tmp_path):
    with open(tmp_path / "p.jsonl", "w") as f:
        for i, p in enumerate(PROMPTS):
            f.write(json.dumps({"prompt": {"text": p, "toxicity": 0.1 * i}, "source": f"x:{i}"}) + "\n")
    return tmp_path / "p.jsonl"


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_resume_continues_without_duplicates(tmp_path, prompt_file):
    full = tmp_path / "full.jsonl"
    run_generation(smoke_cfg(tmp_path, full, "batch_size=4"))
    expected = lines(full)
    assert [r["prompt"]["text"] for r in expected] == PROMPTS
    assert all(len(r["generations"]) == 2 for r in expected)

    out = tmp_path / "resumed.jsonl"
    run_generation(smoke_cfg(tmp_path, out, "limit=2", "batch_size=1"))  # "killed" after two prompts
    assert len(lines(out)) == 2
    with open(out, "a") as f:
        f.write('{"prompt": {"text": "half a li')  # a kill in the middle of a write
    meta = run_generation(smoke_cfg(tmp_path, out, "batch_size=3"))
    assert lines(out) == expected  # same samples whatever the batching, no duplicates, no half line
    assert meta["counts"]["prompts"] == 4 and meta["counts"]["row_steps"] > 0
    on_disk = json.loads((tmp_path / "resumed.jsonl.meta.json").read_text())
    assert on_disk["counts"] == meta["counts"] and on_disk["config"]["decoding"]["rectify"] is True
    gens = [g for r in expected for g in r["generations"]]  # a rectified run counts per generation too
    assert sum(g["steps"] for g in gens) == meta["counts"]["row_steps"]
    assert sum(g["dead_end_fallbacks"] for g in gens) == meta["counts"]["dead_ends"]
    run_generation(smoke_cfg(tmp_path, out))  # already complete: nothing appended
    assert lines(out) == expected


def test_resume_under_another_config_is_refused(tmp_path, prompt_file):
    out = tmp_path / "g.jsonl"
    run_generation(smoke_cfg(tmp_path, out, "limit=2", "decoding.epsilon=0.1"))
    before = out.read_text()
    for changed in (["decoding.epsilon=0.3"], ["seed=5"], ["decoding=plain"]):
        with pytest.raises(ValueError, match="another config") as err:
            run_generation(smoke_cfg(tmp_path, out, "decoding.epsilon=0.1", *changed))
        assert "new output_path" in str(err.value)
    assert "decoding.epsilon: 0.1 -> 0.3" in str(
        pytest.raises(ValueError, run_generation, smoke_cfg(tmp_path, out, "decoding.epsilon=0.3")).value)
    assert out.read_text() == before  # nothing written by a refused resume
    # what only moves where or how fast (batch size, limit) may change
    run_generation(smoke_cfg(tmp_path, out, "decoding.epsilon=0.1", "batch_size=3"))
    assert len(lines(out)) == len(PROMPTS)


def test_a_moved_run_with_its_prompt_file_resumes_a_changed_prompt_file_does_not(tmp_path, prompt_file):
    """The run records its prompt file by path and by sha256: the same bytes at a new path resume, other bytes
    at a new path are refused."""
    import shutil

    out = tmp_path / "a" / "g.jsonl"
    out.parent.mkdir()
    run_generation(smoke_cfg(tmp_path, out, "limit=2"))
    assert json.loads(Path(f"{out}.meta.json").read_text())["input_digests"]["prompts_path"]
    moved = tmp_path / "b"
    shutil.move(str(out.parent), moved)
    shutil.move(str(prompt_file), moved / "p.jsonl")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("generate", overrides=["debug=smoke", f"prompts_path={moved / 'p.jsonl'}",
                                             f"output_path={moved / 'g.jsonl'}", f"paths.output_dir={tmp_path}"])
    run_generation(cfg)
    assert len(lines(moved / "g.jsonl")) == len(PROMPTS)

    again = tmp_path / "c"
    shutil.move(str(moved), again)
    (again / "p.jsonl").write_text((again / "p.jsonl").read_text().replace("Hello there", "Hello again"))
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("generate", overrides=["debug=smoke", f"prompts_path={again / 'p.jsonl'}",
                                             f"output_path={again / 'g.jsonl'}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="prompts_path"):
        run_generation(cfg)


def test_the_sidecar_keeps_the_first_runs_command_line(tmp_path, prompt_file, monkeypatch):
    """The overrides that drew a file are kept with it (.hydra/overrides.yaml belongs to the latest run in the dir)."""
    import rectify.decoding.runner as runner

    out = tmp_path / "g.jsonl"
    monkeypatch.setattr(runner, "command_overrides", lambda: ["decoding.epsilon=0.1", "limit=2"])
    run_generation(smoke_cfg(tmp_path, out, "limit=2", "decoding.epsilon=0.1"))
    monkeypatch.setattr(runner, "command_overrides", lambda: ["decoding.epsilon=0.1", "batch_size=1"])
    meta = run_generation(smoke_cfg(tmp_path, out, "decoding.epsilon=0.1", "batch_size=1"))  # resumed
    assert meta["overrides"] == ["decoding.epsilon=0.1", "limit=2"]
    monkeypatch.undo()
    assert runner.command_overrides() == []   # outside a Hydra job


def test_a_second_writer_on_the_same_output_is_refused(tmp_path, prompt_file):
    import fcntl

    from rectify.decoding.io import OutputBusyError

    out = tmp_path / "g.jsonl"
    with open(out, "a") as other:   # another process writing it (flock: per open file, so this counts)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(OutputBusyError, match="being written by another process"):
            run_generation(smoke_cfg(tmp_path, out, "limit=2"))
    assert out.read_text() == ""
    run_generation(smoke_cfg(tmp_path, out, "limit=2"))   # released: runs
    assert len(lines(out)) == 2


def test_no_prompts_is_an_error_not_an_empty_success(tmp_path):
    (tmp_path / "p.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="gives no prompts"):
        run_generation(smoke_cfg(tmp_path, tmp_path / "g.jsonl"))


def test_plain_and_txt_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("Hello there\nYou are a\n")
    out = tmp_path / "plain.jsonl"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("generate", overrides=["debug=smoke", "decoding=plain", f"prompts_path={tmp_path / 'p.txt'}",
                                             f"output_path={out}", f"paths.output_dir={tmp_path}"])
    meta = run_generation(cfg)
    rows = lines(out)
    assert [r["prompt"]["text"] for r in rows] == ["Hello there", "You are a"]
    assert meta["counts"]["dead_ends"] == 0 and meta["config"]["decoding"]["rectify"] is False


def test_rectify_without_value_model_is_a_clear_error(tmp_path, prompt_file):
    with pytest.raises(ValueError, match="value_model_path"):
        run_generation(smoke_cfg(tmp_path, tmp_path / "o.jsonl", "untrained_value_model=false"))
    assert not (tmp_path / "o.jsonl").exists()   # a failed start leaves no empty output behind


def test_prompt_file_errors_and_partial_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": {"text": "ok"}}\n\n{"prompt": 3}\n')
    with pytest.raises(PromptFileError, match=r"bad.jsonl:3"):
        read_prompts(bad)
    bad.write_text('{"prompt": "a string"}\n{"text": "top level"}\nnope\n')
    with pytest.raises(PromptFileError, match=r"bad.jsonl:3: malformed JSON"):
        read_prompts(bad)
    bad.write_text('{"prompt": "a string"}\n{"text": "top level", "split": "test"}\n')
    assert read_prompts(bad) == [{"prompt": {"text": "a string"}}, {"prompt": {"text": "top level"}, "split": "test"}]
    part = tmp_path / "part.jsonl"
    part.write_text('{"a": 1}\n{"b": 2}\n{"c"')
    assert prepare_resume(part) == 2 and part.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert prepare_resume(tmp_path / "missing.jsonl") == 0


def test_unreadable_or_missing_prompt_file_is_a_prompt_file_error(tmp_path):
    bad = tmp_path / "p.txt"
    bad.write_bytes(b"Hello there\nYou \xff are\n")
    for path, message in [(bad, r"p\.txt:2: not valid UTF-8"), (tmp_path / "nonexistent.jsonl", "does not exist")]:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("generate", overrides=["debug=smoke", f"prompts_path={path}",
                                                 f"output_path={tmp_path / 'o.jsonl'}", f"paths.output_dir={tmp_path}"])
        with pytest.raises(PromptFileError, match=message):
            run_generation(cfg)
        assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_script_runs_under_hydra(tmp_path, prompt_file):
    out = tmp_path / "cli.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts/generate.py"), "debug=smoke", f"prompts_path={prompt_file}",
                    f"output_path={out}", f"hydra.run.dir={tmp_path / 'run'}"], check=True, cwd=ROOT)
    assert len(lines(out)) == len(PROMPTS)


def test_a_run_recorded_before_stop_neutral_existed_counts_as_not_stop_neutral():
    """Runs recorded before ``decoding.stop_neutral`` drew with a tilt that moved P(stop): they resume under
    ``stop_neutral=false`` and conflict with the stop-neutral default."""
    from rectify.decoding.runner import resume_conflicts

    old = {"decoding": {"tilt": 64, "epsilon": 0.05}, "seed": 0}
    assert resume_conflicts(old, {"decoding": {"tilt": 64, "epsilon": 0.05, "stop_neutral": False}, "seed": 0}) == []
    assert resume_conflicts(old, {"decoding": {"tilt": 64, "epsilon": 0.05, "stop_neutral": True}, "seed": 0}) == [
        "decoding.stop_neutral: False -> True"]


def test_a_smaller_limit_on_a_longer_run_says_limit(tmp_path, prompt_file):
    out = tmp_path / "g.jsonl"
    run_generation(smoke_cfg(tmp_path, out, "limit=3"))
    with pytest.raises(ValueError, match="limit=1 keeps only 1 prompts of .*: it cannot shrink a run"):
        run_generation(smoke_cfg(tmp_path, out, "limit=1"))


def _generator(cfg):
    from omegaconf import OmegaConf

    from rectify.lm import load_lm

    return load_lm(OmegaConf.merge(cfg.lm, cfg.generator_override))


def test_smoke_generator_follows_the_chosen_lm(tmp_path, prompt_file):
    """debug=smoke makes the chosen lm tiny (as train's smoke does its backbone): lm=gpt2 gives a tiny GPT-2 with
    the GPT-2 tokenizer, so a GPT-2 smoke Q_D rectifies it; the default stays the tiny Llama with SmolLM2's."""
    from rectify.lm import LMConfig, RandomInit, load_lm, same_weights
    from rectify.value_model import ValueModel

    tiny = RandomInit(num_layers=2, hidden_size=64, num_heads=4, max_positions=256, seed=0)
    model, tok = _generator(smoke_cfg(tmp_path, tmp_path / "d.jsonl"))
    before, before_tok = load_lm(LMConfig(source="hub", name_or_path="tiny-llama", family="llama",
                                          tokenizer="smollm2", dtype="auto", random_init=tiny))
    assert type(model) is type(before) and len(tok) == len(before_tok) == 49152
    assert same_weights(model, before, exact=True)   # the very model the old tiny-llama override built

    model, tok = _generator(smoke_cfg(tmp_path, tmp_path / "g.jsonl", "lm=gpt2"))
    assert type(model).__name__ == "GPT2LMHeadModel" and model.config.n_layer == 2 and len(tok) == 50257

    # a GPT-2 Q_D (as train.py +experiment=gpt2 debug=smoke exports: tiny, random) rectifies it
    qd = ValueModel.from_lm(LMConfig(source="hub", name_or_path="gpt2", family="gpt2", tokenizer="gpt2",
                                     random_init=tiny)).save_pretrained(tmp_path / "qd")
    out = tmp_path / "g.jsonl"
    run_generation(smoke_cfg(tmp_path, out, "lm=gpt2", f"value_model_path={qd}", "decoding=paper", "limit=2"))
    assert len(lines(out)) == 2


def test_smoke_says_a_tiny_model_stands_in_for_the_chosen_lm(tmp_path, caplog):
    """debug=smoke with your own lm: the run goes on with a tiny random model of its family, and says so."""
    from rectify.decoding.runner import build_sampler

    cfg = smoke_cfg(tmp_path, tmp_path / "o.jsonl", "lm=gpt2", "lm.source=local", "lm.name_or_path=/my/own/lm")
    with caplog.at_level("WARNING", logger="rectify.decoding.runner"):
        sampler = build_sampler(cfg)
    assert type(sampler.generator).__name__ == "GPT2LMHeadModel"
    assert any("tiny random gpt2 model stands in for lm /my/own/lm" in r.getMessage() for r in caplog.records)


@pytest.mark.integration
def test_smoke_makes_a_tiny_gemma3(tmp_path, prompt_file):
    """lm=gemma3 debug=smoke: a tiny random Gemma 3 with the bundled Gemma tokenizer (built from the bundled model
    on first use), rectified by an untrained Q_D of the same tiny config."""
    model, tok = _generator(smoke_cfg(tmp_path, tmp_path / "m.jsonl", "lm=gemma3"))
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.num_hidden_layers == 2
    assert len(tok) == model.config.vocab_size == 262144
    out = tmp_path / "m.jsonl"
    run_generation(smoke_cfg(tmp_path, out, "lm=gemma3", "limit=2"))
    assert [len(r["generations"]) for r in lines(out)] == [2, 2]


def test_a_run_recorded_before_share_lower_was_configured_resumes(tmp_path):
    """configs/decoding gained share_lower (auto, the DecodingConfig default those runs drew with): a run
    recorded without the key still resumes under the default and conflicts with another value."""
    from rectify.decoding.runner import plain_container, resume_conflicts

    now = plain_container(smoke_cfg(tmp_path, tmp_path / "g.jsonl"))
    old = {**now, "decoding": {k: v for k, v in now["decoding"].items() if k != "share_lower"}}
    assert now["decoding"]["share_lower"] == "auto" and resume_conflicts(old, now) == []
    later = plain_container(smoke_cfg(tmp_path, tmp_path / "g.jsonl", "decoding.share_lower=false"))
    assert resume_conflicts(old, later) == ["decoding.share_lower: 'auto' -> False"]


def test_a_refused_resume_keeps_the_run_dirs_hydra_record(tmp_path, prompt_file):
    """Hydra writes a command's config into hydra.run.dir/.hydra before the script starts: a resume refused
    there (another config) must leave the record of the run whose generations the dir holds."""
    run_dir, out = tmp_path / "run", tmp_path / "run" / "g.jsonl"
    base = [sys.executable, str(ROOT / "scripts/generate.py"), "debug=smoke", f"prompts_path={prompt_file}",
            f"output_path={out}", f"hydra.run.dir={run_dir}"]
    subprocess.run([*base, "decoding.epsilon=0.1"], check=True, cwd=ROOT, capture_output=True)
    record = {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()}
    assert "decoding.epsilon=0.1" in record["overrides.yaml"]
    refused = subprocess.run([*base, "decoding.epsilon=0.3"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 1 and "another config" in refused.stderr, refused.stderr[-2000:]
    assert {p.name: p.read_text() for p in (run_dir / ".hydra").iterdir()} == record
    # a run that goes ahead in the same dir is recorded as Hydra always does
    subprocess.run([*base, "decoding.epsilon=0.1", "batch_size=3"], check=True, cwd=ROOT, capture_output=True)
    assert "batch_size=3" in (run_dir / ".hydra" / "overrides.yaml").read_text()


def test_device_names_are_checked(monkeypatch):
    """device=cuda without a GPU, or a misspelt device: a config error naming the fix, not torch's assertion."""
    from rectify.decoding.runner import resolve_device
    from rectify.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    for name, words in (("cuda", "no CUDA GPU is visible"), ("cuda:1", "no CUDA GPU"), ("gpu0", "not a torch device")):
        with pytest.raises(ConfigError, match=words):
            resolve_device(name)
