"""The `xl` command line: run one notebook, build the book, train the lab models, show presets, manage caches."""
from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time

from xl.book import runner
from xl.core import cache, paths, presets
from xl.core.errors import XLError
from xl.models import registry


def _print(*args, **kwargs):
    print(*args, **kwargs, file=sys.stderr)


def cmd_run(args) -> None:
    result = runner.run(args.notebook, args.preset, runner.parse_params(args.param), force=args.force)
    _print(f"{result.name}: {result.status} ({result.seconds:.1f}s) -> {runner.executed_path(args.preset, result.name)}")


def cmd_book(args) -> None:
    start = time.perf_counter()
    results = runner.run_all(args.preset, force=args.force, log=_print, params=runner.parse_params(args.param))
    html = None if args.no_html else runner.build_html(args.preset)
    _print("\nsummary")
    for r in results:
        _print(f"  {r.name:<20} {r.status:<7} {r.seconds:8.1f}s")
    _print(f"  {'total':<28} {time.perf_counter() - start:8.1f}s")
    if html:
        _print(f"book: {html / 'index.html'}")


def cmd_train(args) -> None:
    # imported here: torch and transformers take seconds to load, which the other commands do without
    import torch

    from xl import training

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = presets.config(args.preset, **runner.parse_params(args.param))
    names = args.models or registry.LAB_MODELS
    if args.force:
        for name in names:
            folder = paths.model_dir(cfg["preset"], name)
            if folder.exists():
                shutil.rmtree(folder)
    start = time.perf_counter()
    summary = training.train_lab_models(cfg, args.models)
    total = time.perf_counter() - start
    print(summary.to_string(index=False))
    print(f"training total: {total:.1f}s (sum of per-model training: {summary.seconds.sum():.1f}s)")
    if not args.no_eval:
        _print_translation_checks(cfg, [n for n in names if registry.directions(n)])


def _print_translation_checks(cfg: dict, names: list[str]) -> None:
    """chrF of the translation models against the source-blind baseline and the source-dependence gate,
    as the models chapter shows them."""
    from xl.analysis import source_dependence, translation  # imported here for the same reason as in cmd_train

    start = time.perf_counter()
    quality = translation.mt_quality(cfg, names)
    print(quality.round(1).to_string(index=False))
    print(translation.against_baseline(quality).to_string())
    cp = quality[quality.model.map(lambda m: registry.family(m) == "CP")]
    if len(cp):
        print(f"CP models: mean chrF {cp.groupby('model').chrf.mean().mean():.1f} "
              f"(source-blind baseline {cp.groupby('model').baseline.mean().mean():.1f})")
    gated = source_dependence.gate(source_dependence.table(cfg, names, write=False), quality)
    print(gated.round(2).to_string(index=False))
    print(source_dependence.verdict(gated).replace("**", "").replace("*", ""))
    print(f"evaluation: {time.perf_counter() - start:.1f}s")


def cmd_presets(args) -> None:
    with __import__("pandas").option_context("display.max_colwidth", 60, "display.width", 200):
        print(presets.table().to_string())


def cmd_cache(args) -> None:
    if args.clear is not None:
        freed = cache.clear(args.clear or None)
        _print(f"cleared {cache.human(freed)} from {cache.root()}")
    print(cache.table().to_string(index=False))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    preset = dict(default="lab", help="smoke, lab (default) or paper; see `xl presets`")

    r = sub.add_parser("run", help="execute one notebook of notebooks/")
    r.add_argument("notebook", help="notebook name, e.g. corpus")
    r.add_argument("--preset", **preset)
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a notebook parameter or preset key, value in YAML (repeatable)")
    r.add_argument("--force", action="store_true", help="re-execute even if nothing changed")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("book", help="execute all chapters in _toc.yml order and build the HTML book")
    b.add_argument("--preset", **preset)
    b.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a preset key for every chapter, value in YAML (repeatable), e.g. languages=[en,de,zh]")
    b.add_argument("--force", action="store_true", help="re-execute every chapter")
    b.add_argument("--no-html", action="store_true", help="execute the chapters only")
    b.set_defaults(func=cmd_book)

    t = sub.add_parser("train", help="train the lab models of a preset (accelerate launch -m xl train: several GPUs)")
    t.add_argument("--preset", **preset)
    t.add_argument("--models", nargs="*", help=f"some of {' '.join(registry.LAB_MODELS)} (default: all)")
    t.add_argument("--force", action="store_true", help="retrain even if saved")
    t.add_argument("--no-eval", action="store_true", help="skip chrF and the source-dependence gate")
    t.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is much faster on "
                   "cores shared with other busy processes)")
    t.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a preset key, value in YAML (repeatable), e.g. -p 'train_steps={mlm: 400}'")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("cache", help="show the caches' sizes (XL_CACHE moves them), or clear them")
    c.add_argument("--clear", nargs="?", const="", default=None, metavar="NAME",
                   help="clear one cache (e.g. models, reps) or, without NAME, all of them")
    c.set_defaults(func=cmd_cache)

    s = sub.add_parser("presets", help="print the presets and their parameters")
    s.set_defaults(func=cmd_presets)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    # `kill` then runs the same clean-up as Ctrl-C: no pending tables or temporary files stay behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        args.func(args)
    except XLError as err:
        _print(f"xl: error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
