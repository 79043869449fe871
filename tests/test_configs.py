"""Every experiment and every demo-style run config composes, resolves and names groups that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rectify.value_model import ValueConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# train.py experiments, and demo.py studies (experiment/demo_*.yaml, composed over demo.yaml)
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml") if not p.stem.startswith("demo_"))
DEMO_STUDIES = sorted(p.stem for p in (CONFIGS / "experiment").glob("demo_*.yaml"))


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _value_config(tmp_path, *train_overrides: str) -> ValueConfig:
    """The ValueConfig train.py would build from these overrides (resolved, unknown model keys left out)."""
    cfg = _compose("train", f"paths.output_dir={tmp_path}", *train_overrides)
    OmegaConf.resolve(cfg)
    keys = set(ValueConfig.__dataclass_fields__)
    return ValueConfig.from_any({k: v for k, v in cfg.model.items() if k in keys})


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_composes_into_a_valid_value_config(tmp_path, exp):
    _value_config(tmp_path, f"+experiment={exp}")


@pytest.mark.parametrize("study", [None, *DEMO_STUDIES])
def test_demo_and_its_studies_name_existing_data_and_experiment(study):
    cfg = _compose("demo", *([f"+experiment={study}"] if study else []))
    assert (CONFIGS / "data" / f"{cfg.data}.yaml").is_file()
    assert cfg.train_experiment in EXPERIMENTS
    assert cfg.generate.candidates, "a study needs rules to select among"


@pytest.mark.parametrize("study", [None, *DEMO_STUDIES])
def test_demo_studies_train_overrides_make_a_valid_value_config(tmp_path, study):
    """A study's train_overrides reach train.py as Hydra overrides: they must compose over its train experiment."""
    cfg = _compose("demo", *([f"+experiment={study}"] if study else []))
    value = _value_config(tmp_path, f"+experiment={cfg.train_experiment}", *cfg.train_overrides)
    assert value.train_top_layers == (3 if study == "demo_k25_top3" else 1)   # the recipe trains one block


def test_top_level_holds_one_config_per_script():
    scripts = {p.stem for p in (ROOT / "scripts").rglob("*.py")}
    assert {p.stem for p in CONFIGS.glob("*.yaml")} <= scripts


def test_recipe_configs():
    cfg = _compose("train", "+experiment=smollm2")
    assert cfg.model.init_scale_on == "query" and cfg.calibration.enabled
    assert OmegaConf.to_container(cfg.data)["train_path"].endswith("offline/train.json")
    build = _compose("build_data").build
    assert build.assemble.truncate == "dead_end" and build.assemble.human_continuations
    assert build.continuations.k == 8 and build.prompts.max_prompts is None
    paper = _compose("build_data", "data=paper").build
    assert paper.assemble.truncate is None and not paper.assemble.human_continuations


def test_decoding_rules_the_recommended_the_papers_and_plain():
    """decoding=rectified is the headline recipe's rule (clean_64 of demo_k25_recipe: chosen on dev in demo_k25,
    stop-neutral since); decoding=paper the paper's; plain records no rule of its own, so a plain run's recorded
    config does not move when the recommendation does."""
    from rectify.decoding import DecodingConfig

    def rule(name):
        return DecodingConfig.from_any(_compose("generate", "prompts_path=x", f"decoding={name}").decoding)

    recommended, paper, plain = rule("rectified"), rule("paper"), rule("plain")
    k25 = _compose("demo", "+experiment=demo_k25")
    rule_of = {"rectified": [f"decoding.tilt={recommended.tilt:g}", f"decoding.epsilon={recommended.epsilon:g}"]}
    chosen = OmegaConf.to_container(_compose("demo", "+experiment=demo_k25_recipe").generate.candidates)["clean_64"]
    assert sorted(chosen) == sorted(rule_of["rectified"])
    recorded = OmegaConf.to_container(k25.generate.candidates)["clean_64"]   # as demo_k25 drew it, before stop_neutral
    assert sorted(recorded) == sorted([*rule_of["rectified"], "decoding.stop_neutral=false"])
    assert recommended.rectify and recommended.calibration == "auto" and recommended.q_scale == 1.0
    assert recommended.stop_neutral
    assert (paper.tilt, paper.epsilon, paper.calibration, paper.q_scale, paper.cap_mode) == (0.0, 0.1, False, 1.0,
                                                                                            "original")
    assert not plain.rectify and (plain.tilt, plain.epsilon) == (0.0, 0.1)
    card = _compose("train", "+experiment=smollm2").card.recommended   # the Q_D's model card names the same rule
    assert (card.tilt, card.epsilon) == (recommended.tilt, recommended.epsilon)
    for cfg in (_compose("demo"), _compose("demo", "+experiment=demo_full"), k25):   # every candidate names its tilt
        cands = OmegaConf.to_container(cfg.generate.candidates)
        assert all(any(o.startswith("decoding.tilt=") for o in ov) for ov in cands.values() if ov is not None)


# The rules each study selects among, as its recorded runs in docs/results.md had them: a change to make demo's
# candidates (which every study inherits) must not silently change what a recorded study reproduces.
RECORDED_CANDIDATES = {
    None: {"clean_8_risk_0.15", "clean_32", "clean_32_risk_0.15", "clean_64"},
    "demo_full": {"risk_0.1", "clean_8_risk_0.25", "clean_8", "clean_8_risk_0.15", "clean_3", "risk_0.25", "raw_eps_0.1"},
    "demo_k25": {"risk_0.1", "clean_8", "clean_16", "clean_32", "clean_8_risk_0.1", "clean_64", "clean_128"},
    "demo_k25_recipe": {"clean_64"},
    "demo_k25_top3": {"clean_64", "clean_96", "clean_128", "clean_192"},
}


@pytest.mark.parametrize("study", [None, *DEMO_STUDIES])
def test_each_study_selects_among_its_recorded_rules_on_its_recorded_prompts(study):
    cfg = _compose("demo", *([f"+experiment={study}"] if study else []))
    cands = {n for n, ov in OmegaConf.to_container(cfg.generate.candidates).items() if ov is not None}
    assert cands == RECORDED_CANDIDATES[study]
    subsets = (cfg.generate.prompt_subset, cfg.generate.test_prompt_subset)
    assert subsets == {None: ("nontoxic", "all"), "demo_full": ("all", "all")}.get(study, ("nontoxic", "nontoxic"))
    if study in ("demo_full", "demo_k25", "demo_k25_top3"):  # recorded before the stop-neutral tilt existed
        tilted = {n: ov for n, ov in OmegaConf.to_container(cfg.generate.candidates).items()
                  if ov is not None and not any(o in ov for o in ("decoding.tilt=0", "decoding=plain"))}
        assert all("decoding.stop_neutral=false" in ov for ov in tilted.values()), tilted


def test_make_demo_offers_the_recommended_rule():
    """make demo selects among rules that include decoding=rectified's default, so the demo can choose the recipe."""
    recommended = _compose("generate", "prompts_path=x", "decoding=rectified").decoding
    cands = OmegaConf.to_container(_compose("demo").generate.candidates)
    assert sorted([f"decoding.tilt={recommended.tilt:g}", f"decoding.epsilon={recommended.epsilon:g}"]) in [
        sorted(ov) for ov in cands.values() if ov is not None]


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "decoding").glob("*.yaml")))
def test_every_decoding_field_is_in_the_decoding_configs(name):
    """Each DecodingConfig field is a key of every configs/decoding/*.yaml, so `decoding.FIELD=...` works without
    `+` (docs/performance.md names decoding.share_lower as a setting)."""
    from rectify.decoding import DecodingConfig

    cfg = _compose("generate", "prompts_path=x", f"decoding={name}", "decoding.share_lower=false")
    assert set(DecodingConfig.__dataclass_fields__) <= set(cfg.decoding)
    assert DecodingConfig.from_any(cfg.decoding).share_lower is False
