"""The ``landscape`` command: list, run, show and draw.

    landscape list
    landscape run NAME [--smoke] [--set key=value ...] [--force]
    landscape show NAME [--smoke] [--set key=value ...] [--run HASH] [--json]
    landscape figures [NAME ...] [--smoke] [--set key=value ...]

``python -m experiments`` is the same command. Results go to ``$LANDSCAPE_RESULTS``, else to
``./results`` of the working directory. ``show`` prints a short summary of a stored run (how to
rebuild its config, the scalar metrics, the provenance) and everything with ``--json``; when the
requested config has no stored result it lists the runs that are stored. Bad input (an unknown
experiment, figure or key, a value of the wrong type or out of range, an unreadable results or
stage file, a results folder that cannot be written) prints one line to stderr and exits with
status 2; Ctrl-C prints one line saying how to resume and exits with status 130.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
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
    sub.add_parser("list", help="list experiments, figures and how many runs are stored")
    for cmd, helptext in (("run", "run one experiment and store its results"),
                          ("show", "summarise a stored run of one experiment")):
        r = sub.add_parser(cmd, help=helptext)
        r.add_argument("name")
        r.add_argument("--smoke", action="store_true", help="use the tiny smoke config")
        r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (repeatable)")
        if cmd == "run":
            r.add_argument("--force", action="store_true",
                           help="recompute everything: drop the stored result and finished stages")
        else:
            r.add_argument("--run", metavar="HASH", help="a stored run by its config hash "
                           "(a unique prefix is enough; see the list)")
            r.add_argument("--json", action="store_true",
                           help="print the config, every metric and the provenance as JSON")
    f = sub.add_parser("figures", help="run missing results, then draw figures")
    f.add_argument("names", nargs="*", help="figures to draw (default: all)")
    f.add_argument("--smoke", action="store_true", help="use smoke configs")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every experiment of the figures that has it")
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
                 overrides: Iterable[str] = (), out_dir: Path | None = None,
                 quiet: bool | None = None) -> list[Path]:
    """Run whatever results the figures need and are missing, then draw them (PNG and PDF).

    ``overrides`` (``key=value``) apply to every experiment of the figures whose config has that
    key; a key that no experiment has is an error. Default configs draw into
    ``paper_figures.OUT_DIR`` (the checkout's ``paper_figures/out`` in a development install);
    smoke configs into ``RESULTS/figures-smoke`` and runs with overrides into
    ``RESULTS/figures-custom``, so that they never overwrite the committed figures. Drawing
    the default figures also copies each result's JSON record to ``paper_figures.RECORDS_DIR``.
    Unless
    quiet (see ``landscape.experiment.progress_style``), one line on stderr says which
    experiment runs and how far the set is (``k/N``), also when stderr is not a terminal.
    """
    names = list(names) if names else paper_figures.names()
    figures = {name: paper_figures.get(name) for name in names}
    needed = list(dict.fromkeys(e for fig in figures.values() for e in fig.EXPERIMENTS))
    modules = {e: experiments.get(e) for e in needed}
    overrides = list(overrides)
    configs = {e: ex.make_config(m, smoke=smoke, overrides=_applicable(m, overrides))
               for e, m in modules.items()}  # every config is checked before any work
    unused = {o.partition("=")[0] for o in overrides} - {
        o.partition("=")[0] for m in modules.values() for o in _applicable(m, overrides)}
    if unused:
        raise ex.UsageError(f"no experiment of these figures has the config key(s) "
                            f"{', '.join(sorted(unused))}")
    if out_dir is None:
        out_dir = (ex.results_dir() / "figures-custom" if overrides else
                   ex.results_dir() / "figures-smoke" if smoke else paper_figures.OUT_DIR)
    say = _reporter(quiet)
    kind = ("smoke" if smoke else "default") + (" with --set" if overrides else "")
    results: dict[str, ex.Result] = {}
    written: list[Path] = []
    for k, (fig_name, fig) in enumerate(figures.items(), 1):
        for exp in fig.EXPERIMENTS:
            if exp in results:
                continue
            module, config = modules[exp], configs[exp]
            where = f"experiment {needed.index(exp) + 1}/{len(needed)}: {exp} ({kind} config)"
            if ex.result_path(module, config).exists():
                say(f"{where}: stored result")
                results[exp] = ex.load(module, config)
                continue
            say(f"{where}: running")
            start = time.perf_counter()
            results[exp] = ex.ensure(module, config, quiet=quiet)
            _release_compiled()
            say(f"{where}: finished in {ex.format_duration(time.perf_counter() - start)}")
        say(f"figure {k}/{len(figures)}: {fig_name}")
        written += fig.draw({e: results[e] for e in fig.EXPERIMENTS}, Path(out_dir))
    if Path(out_dir) == paper_figures.OUT_DIR and not smoke and not overrides:
        paper_figures.RECORDS_DIR.mkdir(exist_ok=True)
        for exp, result in results.items():
            shutil.copyfile(result.path, paper_figures.RECORDS_DIR / f"{exp}.json")
    return written


def _release_compiled() -> None:
    """Drop JAX's compiled programs once an experiment has finished.

    XLA:CPU maps every compiled program into memory with several mappings of its own; a
    ``figures`` run keeps all experiments' programs alive in one process, and past some
    tens of thousands of mappings (the kernel's ``vm.max_map_count``, 65530 by default) LLVM
    fails with "Cannot allocate memory". The next experiment compiles its own programs anyway
    (or reads them from the persistent compilation cache).
    """
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()


def _applicable(module, overrides: list[str]) -> list[str]:
    fields = {f.name for f in dataclasses.fields(module.Config)}
    return [o for o in overrides if o.partition("=")[0] in fields]


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
                stored = len(list((ex.results_dir() / name).glob("*.json")))
                print(f"  {name}" + (f"  ({stored} stored)" if stored else ""))
            print("figures:")
            for name in paper_figures.names():
                print(f"  {name}")
        elif args.command == "run":
            module = experiments.get(args.name)
            config = ex.make_config(module, smoke=args.smoke, overrides=args.set)
            print(ex.run_experiment(module, config, force=args.force).path)
        elif args.command == "show":
            _show(args)
        elif args.command == "figures":
            for path in draw_figures(args.names, smoke=args.smoke, overrides=args.set):
                print(path)
    except (ex.UsageError, ex.ResultsError) as exc:
        print(f"landscape: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = " ".join(["landscape", *(argv if argv is not None else sys.argv[1:])])
        print(f"landscape: interrupted; finished stages are kept, `{again}` resumes",
              file=sys.stderr)
        return 130
    return 0


def _flags_text(flags: list[str]) -> str:
    return " ".join(f if f.startswith("--") else shlex.quote(f) for f in flags)


def _show(args) -> None:
    module = experiments.get(args.name)
    if args.run:
        runs = [r for r in ex.stored_runs(args.name)
                if r.path.stem.startswith(args.run)]
        if len(runs) != 1:
            what = "no stored run" if not runs else f"{len(runs)} stored runs"
            raise ex.UsageError(f"{what} of {args.name} with a config hash starting "
                                f"{args.run!r}; `landscape show {args.name}` lists them")
        result = ex.load(args.name, path=runs[0].path)
    else:
        config = ex.make_config(module, smoke=args.smoke, overrides=args.set)
        try:
            result = ex.load(module, config)
        except FileNotFoundError:
            flags = _flags_text((["--smoke"] if args.smoke else [])
                                + [x for s in args.set for x in ("--set", s)])
            runs = ex.stored_runs(args.name)
            if not runs:
                raise ex.UsageError(
                    f"no stored result for {args.name} in {ex.results_dir()}; run `landscape "
                    f"run {' '.join(filter(None, [args.name, flags]))}` first") from None
            print(f"no stored result for {args.name} with this config; stored runs "
                  "(`landscape show NAME --run HASH` shows one):")
            for r in runs:
                flags = _flags_text(ex.config_flags(module, r.config)) or "(default config)"
                print(f"  {r.path.stem}  {r.provenance.get('finished_at', '?')}  {flags}")
            return
    if args.json:
        print(json.dumps({"config": result.config, "metrics": _summary(result.metrics),
                          "provenance": result.provenance}, indent=1, default=str))
        return
    print(_summary_text(module, result))


def _summary_text(module, result: ex.Result, limit: int = 30) -> str:
    """A short, human-readable account of a stored run."""
    prov = result.provenance
    flags = _flags_text(ex.config_flags(module, result.config)) or "(default config)"
    compute = prov.get("compute_time_s", prov.get("wall_time_s"))
    attempts = prov.get("attempts", 1)
    lines = [
        f"{result.name}  config {result.path.stem}: {flags}",
        f"  stored    {result.path}",
        f"  finished  {prov.get('finished_at', '?')}, compute "
        f"{ex.format_duration(float(compute)) if compute is not None else '?'}"
        + (f" over {attempts} attempts" if attempts and attempts > 1 else ""),
        f"  code      commit {prov.get('git_commit', '?')}, landscape "
        f"{(prov.get('versions') or {}).get('landscape-jax', '?')}, "
        f"{'float64' if prov.get('x64') else 'float32'} on {prov.get('backend', '?')} "
        f"({prov.get('device_count', '?')} x {prov.get('device_kind', '?')})",
    ]
    scalars, arrays = [], []
    _walk(result.metrics, "", scalars, arrays)
    # the headline first: top-level and summary values before the per-run details
    scalars.sort(key=lambda item: item[0].count(".") + item[0].count("["))
    lines.append(f"  metrics   {len(scalars)} values and {len(arrays)} arrays "
                 "(`--json` prints all of them with the array shapes)")
    for path, value in scalars[:limit]:
        lines.append(f"    {path} = {value}")
    if len(scalars) > limit:
        lines.append(f"    ... {len(scalars) - limit} more")
    return "\n".join(lines)


def _walk(obj, path: str, scalars: list, arrays: list) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk(v, f"{path}.{k}" if path else str(k), scalars, arrays)
    elif isinstance(obj, list) and obj and all(_is_scalar(v) for v in obj) and len(obj) <= 8:
        scalars.append((path, "[" + ", ".join(_fmt(v) for v in obj) + "]"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk(v, f"{path}[{i}]", scalars, arrays)
    elif hasattr(obj, "shape"):
        arrays.append(path)
    else:
        scalars.append((path, _fmt(obj)))


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else str(v)


if __name__ == "__main__":
    sys.exit(main())
