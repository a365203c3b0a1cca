"""The ``landscape`` command: list, run, show and draw.

    landscape list
    landscape run NAME [--smoke] [--set key=value ...]
    landscape show NAME [--smoke] [--set key=value ...]
    landscape figures [NAME ...] [--smoke]

``python -m experiments`` is the same command. Results go to ``$LANDSCAPE_RESULTS``, else to
``./results`` of the working directory. Bad input (an unknown experiment, figure or key, a value
of the wrong type, an unreadable results file) prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import experiments
import paper_figures
from landscape import experiment as ex

__all__ = ["main", "draw_figures"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="landscape", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list experiments and figures")
    for cmd, helptext in (("run", "run one experiment and store its results"),
                          ("show", "print the stored metrics of one experiment")):
        r = sub.add_parser(cmd, help=helptext)
        r.add_argument("name")
        r.add_argument("--smoke", action="store_true", help="use the tiny smoke config")
        r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (repeatable)")
    f = sub.add_parser("figures", help="run missing results, then draw figures")
    f.add_argument("names", nargs="*", help="figures to draw (default: all)")
    f.add_argument("--smoke", action="store_true", help="use smoke configs")
    return p


def _summary(metrics):
    if isinstance(metrics, dict):
        return {k: _summary(v) for k, v in metrics.items()}
    if isinstance(metrics, list):
        return [_summary(v) for v in metrics]
    if hasattr(metrics, "shape"):
        return f"<array {metrics.shape} {metrics.dtype}>"
    return metrics


def draw_figures(names: Iterable[str] | None = None, *, smoke: bool = False,
                 out_dir: Path | None = None, quiet: bool | None = None) -> list[Path]:
    """Run whatever results the figures need and are missing, then draw them (PNG and PDF).

    Default configs draw into ``paper_figures.OUT_DIR`` (the checkout's ``paper_figures/out``
    in a development install); smoke configs into ``RESULTS/figures-smoke``, so that they never
    overwrite the committed figures. Unless quiet (see ``landscape.experiment.progress_style``),
    one line on stderr says which experiment runs and how far the set is (``k/N``), also when
    stderr is not a terminal.
    """
    names = list(names) if names else paper_figures.names()
    figures = {name: paper_figures.get(name) for name in names}
    needed = list(dict.fromkeys(e for fig in figures.values() for e in fig.EXPERIMENTS))
    if out_dir is None:
        out_dir = ex.results_dir() / "figures-smoke" if smoke else paper_figures.OUT_DIR
    say = _reporter(quiet)
    kind = "smoke" if smoke else "default"
    results: dict[str, ex.Result] = {}
    written: list[Path] = []
    for k, (fig_name, fig) in enumerate(figures.items(), 1):
        for exp in fig.EXPERIMENTS:
            if exp in results:
                continue
            module = experiments.get(exp)
            config = ex.make_config(module, smoke=smoke)
            where = f"experiment {needed.index(exp) + 1}/{len(needed)}: {exp} ({kind} config)"
            if ex.result_path(module, config).exists():
                say(f"{where}: stored result")
                results[exp] = ex.load(module, config)
                continue
            say(f"{where}: running")
            start = time.perf_counter()
            results[exp] = ex.ensure(module, config, quiet=quiet)
            say(f"{where}: finished in {ex.format_duration(time.perf_counter() - start)}")
        say(f"figure {k}/{len(figures)}: {fig_name}")
        written += fig.draw({e: results[e] for e in fig.EXPERIMENTS}, Path(out_dir))
    return written


def _reporter(quiet: bool | None):
    show = ex.progress_style(quiet) != "off"

    def say(msg: str) -> None:
        if show:
            print(f"landscape: {msg}", file=sys.stderr, flush=True)

    return say


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            print("experiments:")
            for name in experiments.names():
                print(f"  {name}")
            print("figures:")
            for name in paper_figures.names():
                print(f"  {name}")
        elif args.command == "run":
            module = experiments.get(args.name)
            config = ex.make_config(module, smoke=args.smoke, overrides=args.set)
            print(ex.run_experiment(module, config).path)
        elif args.command == "show":
            module = experiments.get(args.name)
            config = ex.make_config(module, smoke=args.smoke, overrides=args.set)
            try:
                result = ex.load(module, config)
            except FileNotFoundError:
                raise ex.UsageError(f"no stored result for {args.name} with this config in "
                                    f"{ex.results_dir()}; run `landscape run {args.name}` "
                                    "first") from None
            print(json.dumps({"config": result.config, "metrics": _summary(result.metrics),
                              "provenance": result.provenance}, indent=1, default=str))
        elif args.command == "figures":
            for path in draw_figures(args.names, smoke=args.smoke):
                print(path)
    except (ex.UsageError, ex.ResultsError) as exc:
        print(f"landscape: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
