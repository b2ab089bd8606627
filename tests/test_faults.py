"""Faults: bad input refused with a clear XLError, and runs that survive kills, corrupt files and
lack of memory. The rest of the fault suite (`pytest -m fault`) is marked in the other test files."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForMaskedLM, XLMRobertaConfig, XLMRobertaModel

from xl import training, transfer
from xl.book import cli, runner
from xl.core import paths
from xl.core.errors import XLError
from xl.core.results import Store
from xl.data import corpus
from xl.data.tasks import Task
from xl.models import encoder, tokenizer as lab_tokenizer
from xl.training import objectives

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("one_thread")]


def nothing_written(folder):
    return not folder.exists() or not any(folder.rglob("*"))


# ---------------------------------------------------------------- bad input

def test_unknown_model_name(cfg):
    with pytest.raises(XLError, match=r"unknown model 'lab-mlmm'; did you mean 'lab-mlm'\?"):
        encoder.load_encoder("lab-mlmm", preset="smoke")  # not looked for on the hub
    with pytest.raises(XLError, match="unknown lab model 'lab-xyz'"):
        training.lab_model("lab-xyz", cfg)


def test_empty_selection(book_root):
    with pytest.raises(XLError, match="empty language selection"):
        corpus.bible_frame([])
    with pytest.raises(XLError, match="'models' selects nothing"):
        runner.run("similarity", "smoke", {"models": []})
    with pytest.raises(XLError, match="'languages' selects nothing"):
        runner.run("corpus", "smoke", {"languages": []})
    assert nothing_written(book_root / "results" / "smoke")


def test_wrong_type_parameter_is_refused_before_running(book_root, capsys):
    assert cli.main(["run", "corpus", "--preset", "smoke", "-p", "analysis_verses=many"]) == 2
    assert "parameter 'analysis_verses' must be an int (like 64), got 'many'" in capsys.readouterr().err
    assert nothing_written(book_root / "results" / "smoke")


def test_unknown_preset_stops_the_book_before_any_chapter(book_root, capsys):
    assert cli.main(["book", "--preset", "huge", "--no-html"]) == 2
    assert "unknown preset 'huge'; choose one of: smoke, lab, paper" in capsys.readouterr().err
    assert nothing_written(book_root / "results")


# ---------------------------------------------------------------- results folder not writable

def read_only(folder):
    """Make `folder` read-only for this process, or skip: root ignores permission bits, so as root
    the folder is made immutable (chattr +i, which binds root too) where the file system allows it."""
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):
        done = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if not done or done.returncode != 0:
            folder.chmod(0o700)
            pytest.skip("cannot make a folder read-only here (root, no chattr +i)")


def writable_again(folder):
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o700)


def test_unwritable_results_folder(book_root, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    (results / "smoke").mkdir(parents=True)
    monkeypatch.setenv("XL_RESULTS", str(results))
    read_only(results / "smoke")
    try:
        message = f"the results folder {results / 'smoke'} is not writable .*XL_RESULTS"
        with pytest.raises(XLError, match=message):
            Store("smoke").write("table", pd.DataFrame({"a": [1]}))
        with pytest.raises(XLError, match=message):
            runner.run("corpus", "smoke")
        start = time.perf_counter()
        assert cli.main(["book", "--preset", "smoke", "--no-html"]) == 2
        err = capsys.readouterr().err
        assert f"{results / 'smoke'} is not writable" in err and "XL_RESULTS" in err
        assert "[1/" not in err and time.perf_counter() - start < 5  # no chapter started
        assert nothing_written(results / "smoke")
    finally:
        writable_again(results / "smoke")


def test_results_folder_that_cannot_be_created(book_root, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XL_RESULTS", str(tmp_path / "file" / "results"))
    with pytest.raises(XLError, match=r"results folder .*file/results/smoke is not writable .*XL_RESULTS"):
        Store("smoke").write("table", pd.DataFrame({"a": [1]}))
    assert cli.main(["run", "corpus", "--preset", "smoke"]) == 2
    assert "is not writable" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "not a folder"


# ---------------------------------------------------------------- out of memory in training

def test_out_of_memory_in_training_halves_the_batch_and_continues(cfg, tmp_path, capsys):
    tok = lab_tokenizer.mbart_tokenizer(cfg)
    task = objectives.TranslationTask(tok, training.parallel_train(cfg).head(60), [("de", "en"), ("en", "de")],
                                      steps=6, batch_size=8, max_length=32, seed=0)
    common = dict(lr=3e-3, warmup=0.1, seed=0, digest="oom", log_every=1)

    def model():
        torch.manual_seed(0)
        return training.MBartForConditionalGeneration(training.mbart_config(cfg, tok))

    reference, ref_log = training.fit(model(), task, 6, checkpoint=tmp_path / "a.pt", **common)
    small = model()
    forward = small.forward

    def small_memory(**batch):
        if len(batch["input_ids"]) > 2:
            raise torch.OutOfMemoryError("tiny device")
        return forward(**batch)

    small.forward = small_memory
    trained, log = training.fit(small, task, 6, checkpoint=tmp_path / "b.pt", **common)
    out = capsys.readouterr().out
    assert "step 0: out of memory, batch size halved to 4" in out and "halved to 2" in out
    assert "halved to 1" not in out  # the pieces stay small once they fit
    # Pieces are weighted by their share of the batch's target tokens, so the accumulated gradient is
    # the whole batch's token mean: only the order of float additions differs.
    assert [s for s, _ in log] == [s for s, _ in ref_log]
    np.testing.assert_allclose([v for _, v in log], [v for _, v in ref_log], rtol=1e-5)
    for (name, a), b in zip(reference.state_dict().items(), trained.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_out_of_memory_with_single_rows_is_raised(cfg, tmp_path):
    tok = lab_tokenizer.mbart_tokenizer(cfg)
    torch.manual_seed(0)
    model = training.MBartForConditionalGeneration(training.mbart_config(cfg, tok))
    task = objectives.TranslationTask(tok, training.parallel_train(cfg).head(20), [("de", "en")], steps=1,
                                      batch_size=4, max_length=32, seed=0)

    def no_memory(**batch):
        raise torch.OutOfMemoryError("no device memory at all")

    model.forward = no_memory
    with pytest.raises(torch.OutOfMemoryError):
        training.fit(model, task, 1, lr=1e-3, warmup=0.0, seed=0, digest="x", checkpoint=tmp_path / "c.pt")


# ---------------------------------------------------------------- killed and resumed

@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint(cfg, tmp_path):
    """SIGKILL in the middle of `python -m xl train`; the next run resumes and ends with the
    weights of a run that was never interrupted."""
    cache = tmp_path / "cache"
    shutil.copytree(lab_tokenizer.spm_path(cfg).parent, cache / "tokenizer" / lab_tokenizer.spm_path(cfg).parent.name)
    env = dict(os.environ, XL_CACHE=str(cache), XL_RESULTS=str(tmp_path / "results"))
    cmd = [sys.executable, "-m", "xl", "train", "--preset", "smoke", "--models", "lab-mlm", "--no-eval",
           "--threads", "1", "-p", "train_steps={mlm: 300}"]
    folder = cache / "models" / "smoke" / "lab-mlm"
    checkpoint = training.checkpoint_path(folder)

    subprocess.run(cmd, env=env, check=True, capture_output=True)
    reference = tmp_path / "reference"
    folder.rename(reference)

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.is_file():
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 2 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(checkpoint, weights_only=False)["step"]  # complete: checkpoints are written atomically
    assert 0 < step < 300 and not folder.exists()
    # what a kill in the middle of saving the checkpoint leaves behind
    stale = checkpoint.parent / f".{checkpoint.stem}.x1y2z3.tmp.pt"
    stale.write_bytes(b"half a checkpoint")

    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"lab-mlm: resuming from the checkpoint at step {step}" in again.stdout
    assert not checkpoint.exists() and training.leftovers(folder) == []
    assert [p.name for p in folder.parent.iterdir()] == ["lab-mlm"]
    # Batches depend on their step only and the checkpoint holds the optimizer, schedule and random
    # state, on one thread both runs do the same float operations: the weights are identical.
    resumed, uninterrupted = (AutoModelForMaskedLM.from_pretrained(f) for f in (folder, reference))
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert training.marker(folder)["log"] == training.marker(reference)["log"]


# ---------------------------------------------------------------- corrupt files

def test_corrupt_checkpoint_is_ignored(cfg, tmp_path):
    tok = lab_tokenizer.mbart_tokenizer(cfg)
    task = objectives.TranslationTask(tok, training.parallel_train(cfg).head(40), [("de", "en")], steps=4,
                                      batch_size=4, max_length=32, seed=0)
    common = dict(lr=3e-3, warmup=0.1, seed=0, digest="ck", log_every=1, checkpoint_every=2)

    def model():
        torch.manual_seed(0)
        return training.MBartForConditionalGeneration(training.mbart_config(cfg, tok))

    reference, _ = training.fit(model(), task, 4, checkpoint=tmp_path / "a.pt", **common)
    ck = tmp_path / "b.pt"
    training.fit(model(), task, 3, checkpoint=ck, **common)  # a run of 3 steps leaves step 2's checkpoint
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="ignoring the unreadable checkpoint .*b.pt"):
        trained, log = training.fit(model(), task, 4, checkpoint=ck, **common)
    assert [s for s, _ in log] == [1, 2, 3, 4]  # from the start
    for a, b in zip(reference.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture
def tiny_encoder(cfg, tmp_path, monkeypatch):
    tok = lab_tokenizer.xlmr_tokenizer(cfg)
    monkeypatch.setenv("XL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = XLMRobertaModel(XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=80, pad_token_id=tok.pad_token_id))
    return encoder.Encoder("tiny", model, tok, "cpu", {"test": "faults"})


TEXTS = ["In the beginning God created the heaven and the earth.", "Jesus wept.", "And God said, Let there be light."]


def test_corrupt_representation_cache_is_recomputed(tiny_encoder):
    first = tiny_encoder.encode(TEXTS, "en")
    [cached] = paths.cache_dir("reps").glob("*.npy")
    for damage in (cached.read_bytes()[:200], b"\x93NUMPY garbage"):  # truncated data, broken header
        cached.write_bytes(damage)
        with pytest.warns(UserWarning, match="ignoring the unreadable representation cache"):
            np.testing.assert_array_equal(tiny_encoder.encode(TEXTS, "en"), first)
        np.testing.assert_array_equal(np.load(cached), first)  # and written again, whole


def test_corrupt_transfer_cache_is_recomputed(tiny_encoder):
    df = pd.DataFrame({"id": range(3), "query": TEXTS, "target": TEXTS})
    task = Task("ret", "retrieval", "acc@1", [], None, None, {"en": df})
    first = transfer.retrieve(tiny_encoder, task)
    [cached] = paths.cache_dir("transfer").glob("*.json")
    cached.write_text(cached.read_text()[:10])
    with pytest.warns(UserWarning, match="ignoring the unreadable transfer cache"):
        assert transfer.retrieve(tiny_encoder, task) == first
    assert json.loads(cached.read_text()) == {"layers": first}
