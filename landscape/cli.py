"""The ``landscape`` command: list, run and draw.

    landscape list
    landscape run NAME [--smoke] [--set key=value ...]
    landscape figures [NAME ...] [--smoke]
    landscape show NAME [--smoke] [--set key=value ...]

Bad input (an unknown experiment or key, a value of the wrong type, an unreadable results file)
prints one line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from landscape import experiment as ex


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


def _summary(metrics, depth=0):
    if isinstance(metrics, dict):
        return {k: _summary(v, depth + 1) for k, v in metrics.items()}
    if isinstance(metrics, list):
        return [_summary(v, depth + 1) for v in metrics]
    if hasattr(metrics, "shape"):
        return f"<array {metrics.shape} {metrics.dtype}>"
    return metrics


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            print("experiments:")
            for name in ex.list_experiments():
                print(f"  {name}")
            print("figures:")
            for name in ex.list_figures():
                print(f"  {name}")
        elif args.command == "run":
            module = ex.load_experiment(args.name)
            config = ex.make_config(module, smoke=args.smoke, overrides=args.set)
            result = ex.run_experiment(args.name, config)
            print(result.path)
        elif args.command == "show":
            module = ex.load_experiment(args.name)
            config = ex.make_config(module, smoke=args.smoke, overrides=args.set)
            try:
                result = ex.load(args.name, config)
            except FileNotFoundError:
                raise ex.UsageError(f"no stored result for {args.name} with this config; run "
                                    f"`landscape run {args.name}` first") from None
            print(json.dumps({"config": result.config, "metrics": _summary(result.metrics),
                              "provenance": result.provenance}, indent=1, default=str))
        elif args.command == "figures":
            for path in ex.draw_figures(args.names, smoke=args.smoke):
                print(path)
    except (ex.UsageError, ex.ResultsError) as exc:
        print(f"landscape: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
