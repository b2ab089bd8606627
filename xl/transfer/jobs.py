"""Many models, tasks and seeds: one job (`run_job`), one encoder (`evaluate`), a whole preset (`run`,
in this process or in worker processes of one CPU thread each)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from xl.core import io, memo
from xl.core.errors import XLError
from xl.core.results import Store
from xl.core.workers import as_worker
from xl.data import tasks as tasklib
from xl.data import xglue
from xl.models import registry
from xl.models.encoder import load_encoder
from xl.transfer.batching import max_length
from xl.transfer.finetuning import CACHE, _finetune_key, finetune
from xl.transfer.params import FinetuneParams
from xl.transfer.chance import chance_table
from xl.transfer.retrieval import _retrieval_key, retrieve


def _rows(label, name, task, seed, result) -> list[tuple]:
    """Result rows in the task's language order (cached results come back with sorted keys).

    Built from the cached result dicts, so the rows' layout can change without recomputing them:
    a retrieval task gives its headline row (layer None: the last layer's score) and one row per
    layer (0 = embeddings), all with the task's metric."""
    if not task.finetuned:
        rows = []
        for lang in [lang for lang in task.languages if lang in result]:
            values = result[lang]
            rows.append((label, name, lang, 0, task.metric, None, values[-1]))  # headline: the last layer
            rows += [(label, name, lang, 0, task.metric, i, v) for i, v in enumerate(values)]
        return rows
    scores = result["scores"]
    return [(label, name, lang, int(seed), task.metric, None, scores[lang]) for lang in task.languages
            if lang in scores]


def run_job(encoder, label: str, name: str, task, seed, params: FinetuneParams, *, cache: bool = True,
            progress: bool = False, cached_only: bool = False, warn: bool = True):
    """Rows of one (model, task, seed) job: fine-tuning, or retrieval (seed ignored).

    cached_only: return None instead of computing when the result is not cached yet.
    """
    languages = supported_languages(encoder, task, label) if warn else _readable(encoder, task)[0]
    if not task.finetuned:
        limit = max_length(encoder, params.max_length)
        if cached_only and not _is_cached(_retrieval_key(encoder, task, languages, limit)):
            return None
        result = retrieve(encoder, task, cache=cache, max_length=limit, languages=languages)
    else:
        if cached_only and not _is_cached(_finetune_key(encoder, task, seed, params, languages)):
            return None
        result = finetune(encoder, task, seed, params, cache=cache, progress=progress, languages=languages)
    return _rows(label, name, task, seed, result)


def _is_cached(key: str) -> bool:
    return memo.read(CACHE, key) is not None


COLUMNS = ["model", "task", "lang", "seed", "metric", "layer", "score"]


def _frame(rows) -> pd.DataFrame:
    """Rows as a transfer.csv frame; `layer` is an integer column, missing for headline scores."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.assign(layer=df.layer.astype("Int64"))


def evaluate(encoder, tasks: dict, seeds=(0,), params: FinetuneParams | None = None, *, model: str | None = None,
             cache: bool = True, progress: bool = True, bar=None) -> pd.DataFrame:
    """Rows model, task, lang, seed, metric, layer, score for one encoder on `tasks` ({name: Task})."""
    params = params or FinetuneParams()
    label = model or getattr(encoder, "name", type(encoder.model).__name__)
    rows = []
    for name, task in tasks.items():
        for seed in (seeds if task.finetuned else [0]):
            rows += run_job(encoder, label, name, task, seed, params, cache=cache, progress=progress)
            if bar is not None:
                bar.update(1 if task.finetuned else len(seeds))
                bar.set_postfix(model=label, task=name)
    return _frame(rows)


def _readable(encoder, task) -> tuple[list[str], list[str]]:
    ok, skipped = [], []
    for lang in task.languages:
        try:
            encoder.tokenize(["a"], lang)
            ok.append(lang)
        except XLError:
            skipped.append(lang)
    return ok, skipped


def supported_languages(encoder, task, label: str = "the model") -> list[str]:
    """The task's test languages that the encoder can read (mBART-50 has no code for el, bg...), with a warning."""
    ok, skipped = _readable(encoder, task)
    if task.source_lang in skipped:
        raise XLError(f"{label} cannot read {task.source_lang!r}, the training language of task {task.name!r}")
    if skipped:
        warnings.warn(f"{label} has no language code for {skipped}: task {task.name} is not scored there")
    return ok


def build_tasks(cfg: dict, names=None) -> dict:
    """The preset's tasks: lab tasks from the Bible (smoke, lab) or XGLUE (paper)."""
    names = list(names if names is not None else cfg["transfer_tasks"])
    if cfg.get("corpus") == "bible":
        return tasklib.lab_tasks(cfg, names)
    return xglue.tasks(cfg, names)


def model_label(name: str) -> str:
    """Row label of a model: lab names as they are, hub ids by the paper's row name (xl.models.registry.label)."""
    return registry.label(name)


def _encoder(name, preset, device, loaded: dict):
    """The encoder `name`, loaded once per `loaded` dict."""
    if name not in loaded:
        loaded[name] = load_encoder(name, preset=preset, device=device)
    return loaded[name]


def _worker_main(folder) -> None:
    """A worker process of `run`: claims jobs one by one (an exclusive claim file each), writes their rows."""
    folder = Path(folder)
    as_worker()
    warnings.simplefilter("ignore")
    with open(folder / "input.pkl", "rb") as f:
        data = pickle.load(f)
    loaded = {}
    for i, (name, task_name, seed) in enumerate(data["jobs"]):
        try:
            os.close(os.open(folder / f"{i}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        encoder = _encoder(name, data["preset"], data["device"], loaded)
        rows = run_job(encoder, model_label(name), task_name, data["tasks"][task_name], seed, data["params"],
                       cache=data["cache"], warn=False)
        io.write_json(rows, folder / f"{i}.json")


def _run_workers(todo, tasks, params, preset, device, cache, workers, bar) -> dict:
    """Run `todo` jobs in `workers` fresh Python processes (no multiprocessing: works from scripts too)."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="xl-transfer-") as tmp:
        tmp = Path(tmp)
        with open(tmp / "input.pkl", "wb") as f:
            pickle.dump({"tasks": tasks, "jobs": todo, "params": params, "preset": preset,
                         "device": None if device is None else str(device), "cache": cache}, f)
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([package_parent] + [x for x in [env.get("PYTHONPATH")] if x])
        code = "import sys; from xl.transfer.jobs import _worker_main; _worker_main(sys.argv[1])"
        logs = [open(tmp / f"worker{k}.log", "wb") for k in range(workers)]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT) for log in logs]
        try:
            while True:
                running = any(proc.poll() is None for proc in procs)
                for i, job in enumerate(todo):
                    path = tmp / f"{i}.json"
                    if job not in results and path.is_file():
                        results[job] = [tuple(row) for row in json.loads(path.read_text())]
                        bar.set_postfix(model=model_label(job[0]), task=job[1], seed=job[2])
                        bar.update(1)
                if not running:
                    break
                time.sleep(0.5)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            for log in logs:
                log.close()
        failed = [k for k, proc in enumerate(procs) if proc.returncode != 0]
        if failed or len(results) < len(todo):
            tail = (tmp / f"worker{failed[0] if failed else 0}.log").read_text(errors="replace")[-3000:]
            raise XLError(f"a transfer worker failed ({len(results)} of {len(todo)} jobs done); its log ends:\n{tail}")
    return results


def default_workers(work: int, device=None) -> int:
    """Worker processes for `run`: one per CPU core (at most 4) on CPU when there is enough work
    (training examples x epochs over all jobs, above 20,000) to pay for starting them; one on a GPU."""
    if (device is not None and torch.device(device).type != "cpu") or (device is None and torch.cuda.is_available()):
        return 1
    return max(1, min(os.cpu_count() or 1, 4)) if work > 20_000 else 1


def run(cfg: dict, models=None, task_names=None, seeds=None, *, cache: bool = True, progress: bool = True,
        write: bool = True, device=None, workers: int | None = None) -> pd.DataFrame:
    """The whole transfer evaluation of a preset; writes transfer.csv and transfer_chance.csv to its results.

    Jobs (model, task, seed) already in the cache are read in this process; the others run
    here (workers=1) or in `workers` fresh Python processes of one CPU thread each (default:
    one per core on CPU when there is enough work). Results do not depend on the number of
    workers.
    """
    models = list(models if models is not None else cfg["models"])
    seeds = [int(s) for s in (seeds if seeds is not None else cfg["transfer_seeds"])]
    tasks = build_tasks(cfg, task_names)
    params = FinetuneParams.from_config(cfg)
    jobs = [(name, task_name, seed) for name in models for task_name, task in tasks.items()
            for seed in (seeds if task.finetuned else [0])]
    bar = tqdm(total=len(jobs), desc="transfer", disable=not progress)
    results, todo = {}, []
    for name in models:  # what the cache has; one model in memory at a time
        encoder = _encoder(name, cfg["preset"], device, {})
        for task_name, task in tasks.items():
            supported_languages(encoder, task, model_label(name))  # warns here, once
        for job in [j for j in jobs if j[0] == name] if cache else []:
            rows = run_job(encoder, model_label(name), job[1], tasks[job[1]], job[2], params, cached_only=True,
                           warn=False)
            if rows is not None:
                results[job] = rows
                bar.update(1)
        del encoder
    todo = [job for job in jobs if job not in results]
    if workers is None:
        workers = default_workers(sum(len(tasks[t].train) if tasks[t].finetuned else 0 for _, t, _ in todo)
                                  * params.epochs, device)
    if todo and workers == 1:
        for name in dict.fromkeys(job[0] for job in todo):
            encoder = _encoder(name, cfg["preset"], device, {})
            for job in [j for j in todo if j[0] == name]:
                bar.set_postfix(model=model_label(name), task=job[1], seed=job[2])
                results[job] = run_job(encoder, model_label(name), job[1], tasks[job[1]], job[2], params,
                                       cache=cache, progress=progress, warn=False)
                bar.update(1)
            del encoder
    elif todo:
        # the quick retrieval jobs last: they fill the gap while the other worker ends its last fine-tuning
        todo = sorted(todo, key=lambda job: not tasks[job[1]].finetuned)
        results.update(_run_workers(todo, tasks, params, cfg["preset"], device, cache, min(workers, len(todo)), bar))
    bar.close()
    df = _frame([row for job in jobs for row in results[job]])
    if write:
        store = Store(cfg["preset"])
        store.write("transfer", df)
        store.write("transfer_chance", chance_table(tasks))
    return df
