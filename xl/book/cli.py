"""The `xl` command line: run one notebook, build the book, show presets, manage caches."""
from __future__ import annotations

import argparse
import signal
import sys
import time

from xl.book import runner
from xl.core import presets
from xl.core.errors import XLError


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


def cmd_presets(args) -> None:
    with __import__("pandas").option_context("display.max_colwidth", 60, "display.width", 200):
        print(presets.table().to_string())


def cmd_cache(args) -> None:
    from xl.core import cache
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
