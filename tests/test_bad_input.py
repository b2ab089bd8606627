"""Bad input is refused before anything runs, with a message that names the key, the value and what
is allowed, and suggests the nearest name for a typo (preset keys and names, languages, lab models)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xl.core import hub, presets
from xl.core.errors import XLError
from xl.data import languages
from xl.models import encoder

REPO = Path(__file__).resolve().parent.parent


def test_sizes_counts_fractions_and_selections_out_of_range_are_refused():
    with pytest.raises(XLError, match=r"parameter 'analysis_verses' must be > 0, got -5$"):
        presets.config("smoke", analysis_verses=-5)
    with pytest.raises(XLError, match=r"parameter 'train_warmup' must be in \[0, 1\), got 1.5$"):
        presets.config("smoke", train_warmup=1.5)
    with pytest.raises(XLError, match=r"parameter 'transfer_seeds' selects nothing: give at least one value"):
        presets.config("lab", transfer_seeds=[])
    with pytest.raises(XLError, match=r"parameter 'train_steps' values must be > 0, got 0$"):
        presets.config("smoke", train_steps={"mlm": 0})
    with pytest.raises(XLError, match=r"parameter 'train_lr' must be > 0, got 0$"):
        presets.check("train_lr", 0)
    with pytest.raises(XLError, match=r"parameter 'corpus' must be one of bible, flores, got 'bibel'; "
                                      r"did you mean 'bible'\?"):
        presets.config("lab", corpus="bibel")
    assert presets.config("paper", transfer_train_size=None)["transfer_train_size"] is None  # None: all


def test_keys_that_disagree_are_refused():
    with pytest.raises(XLError, match="model_dim=130 must be divisible by model_heads=4"):
        presets.config("lab", model_dim=130)
    with pytest.raises(XLError, match="model_dim=128 must be divisible by model_heads=5"):
        presets.check("model_heads", 5, presets.config("lab"))
    assert presets.config("lab", model_dim=130, model_heads=5)["model_dim"] == 130  # together they agree
    # a pair outside the preset's languages is allowed (not scored); a malformed or unknown one is not
    assert "hi-en" in presets.config("smoke")["mt_eval_pairs"]
    with pytest.raises(XLError, match="parameter 'mt_eval_pairs' entries must be 'xx-yy', two language codes "
                                      "of data/languages.csv, got 'en_de'"):
        presets.config("smoke", mt_eval_pairs=["de-en", "en_de"])


def test_typos_are_answered_with_the_nearest_name(monkeypatch):
    with pytest.raises(XLError, match="unknown parameter 'analysis_verse' for preset 'lab'; "
                                      "did you mean 'analysis_verses'\\? known: description"):
        presets.config("lab", analysis_verse=5)
    with pytest.raises(XLError, match="unknown preset key 'model_head'; did you mean 'model_heads'\\?"):
        presets.check("model_head", 4)
    with pytest.raises(XLError, match=r"unknown language code\(s\) \['enn'\] for the corpus; "
                                      r"did you mean 'en'\? available: "):
        languages.check(["enn", "de"])
    with pytest.raises(XLError, match="parameter 'languages' entries must be a language code of "
                                      "data/languages.csv, got 'dee'; did you mean 'de'\\?"):
        presets.config("smoke", languages=["en", "dee"])
    with pytest.raises(XLError, match=r"^unknown model 'lab-mlmm'; did you mean 'lab-mlm'\?$"):
        encoder.locate("lab-mlmm", "smoke")  # a lab model misspelt, not a hub id to download
    with pytest.raises(XLError, match="parameter 'models' entries must be a lab model .*got 'lab-mlmm'; "
                                      "did you mean 'lab-mlm'\\?"):
        presets.config("smoke", models=["lab-mlm", "lab-mlmm"])
    monkeypatch.setattr(hub, "reachable", lambda: False)
    with pytest.raises(XLError, match="huggingface-cli download facebook/mbart-large-5 "):
        encoder.locate("facebook/mbart-large-5")  # a name with a slash is a hub id: how to download it


def test_cli_refuses_a_negative_size_before_running(tmp_path):
    env = {**os.environ, "XL_RESULTS": str(tmp_path / "results"), "XL_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "xl", "run", "corpus", "--preset", "smoke",
                           "-p", "analysis_verses=-5"], capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 2, done.stderr
    assert "parameter 'analysis_verses' must be > 0, got -5" in done.stderr
    results = tmp_path / "results"
    assert not results.exists() or not any(results.rglob("*"))
