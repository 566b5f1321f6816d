"""The ``babysit`` command: parse -> config -> one library call.

A user's mistake (a :class:`BabysitError`) prints one sentence and exits with its code (2 by
default), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from babysit import config as C
from babysit.errors import BabysitError


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """One ``--section.key`` option per config field; the dataclasses hold the defaults."""
    group = p.add_argument_group("config options (override the defaults and --config)")
    for key, default, kind in C.option_table():
        shown = f"'{default}'" if isinstance(default, str) else default
        group.add_argument(f"--{key}", dest=f"cfg:{key}", metavar=kind.upper(), default=None,
                           help=f"(default: {shown})")


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}


def cmd_train(args: argparse.Namespace) -> None:
    from babysit.experiment import train

    if args.resume:
        if args.config or _overrides(args):
            raise BabysitError("--resume continues a run with its own saved config; drop --config and the "
                               "--section.key options, or start a new run instead.")
        train(C.RunConfig(), resume=args.resume)
        return
    cfg = C.load_toml(args.config) if args.config else C.RunConfig()
    cfg = C.apply_overrides(cfg, _overrides(args))
    train(cfg, out=args.out, name=args.name)


def cmd_eval(args: argparse.Namespace) -> None:
    from babysit.experiment import evaluate_run, format_confusion

    res = evaluate_run(args.run, args.split, args.device)
    print(f"{res.split}: accuracy {res.accuracy:.4f} ({int(res.confusion.trace())}/{int(res.confusion.sum())}), "
          f"loss {res.loss:.4f}")
    print(format_confusion(res))


def cmd_summary(args: argparse.Namespace) -> None:
    from babysit.models.summary import format_summary, summary

    try:
        shape = tuple(int(v) for v in args.input.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise BabysitError(f"--input must look like CxHxW, e.g. 1x28x28 or 3x32x32; got {args.input!r}.")
    print(format_summary(summary(args.spec, shape, args.classes, batch_size=args.batch_size)))


def cmd_data_info(args: argparse.Namespace) -> None:
    from babysit.data.sources import dataset_info, load_dataset

    print(dataset_info(load_dataset(args.name, channels=args.channels, size=args.size)))


def cmd_data_get(args: argparse.Namespace) -> None:
    from babysit.data.locate import get_dataset

    path = get_dataset(args.name, Path(args.dest) if args.dest else None)
    print(f"{args.name} is ready in {path}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="babysit", description="Train ConvNet image classifiers the way the "
                                     "course notes teach, with the practitioner's checks done for you.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model and write a run directory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="TOML file with [section] tables of options")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--out", default="runs", help="folder in which the run directory is made")
    p.add_argument("--name", default="", help="run directory name (default: DATA-DATE-TIME)")
    _add_config_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy and confusion matrix of a run's best weights")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", help="train, val or test")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("summary", help="per-layer volumes, memory, weights and FLOPs of a spec")
    p.add_argument("spec", nargs="?", default=C.ModelConfig().spec,
                   help="architecture spec (default: the default model)")
    p.add_argument("--input", default="1x28x28", help="input volume CxHxW")
    p.add_argument("--classes", type=int, default=10, help="number of classes (size of the last fc)")
    p.add_argument("--batch-size", type=int, default=1, help="memory is reported for this many images")
    p.set_defaults(func=cmd_summary)

    data = sub.add_parser("data", help="get or describe data sets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("info", help="counts, shape, classes and per-class balance")
    p.add_argument("name", help="digits, mnist, fashion-mnist, an image folder or a .npz file")
    p.add_argument("--channels", type=int, default=0, help="convert to 1 or 3 channels (0 keeps)")
    p.add_argument("--size", type=int, default=0, help="resize to SIZE x SIZE (0 keeps)")
    p.set_defaults(func=cmd_data_info)
    p = data.add_parser("get", help="obtain mnist or fashion-mnist where this machine can")
    p.add_argument("name", help="mnist or fashion-mnist")
    p.add_argument("--dest", help="folder to put the files in (default: the user cache)")
    p.set_defaults(func=cmd_data_get)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    try:
        if unknown:
            bad = unknown[0].split("=")[0]
            if bad.startswith("--") and "." in bad:  # names the unknown section or key
                C.apply_overrides(C.RunConfig(), {bad[2:]: ""})
            raise BabysitError(f"unknown option {bad!r}; run `babysit {args.command} --help` for the options.")
        func: Callable[[argparse.Namespace], None] = args.func
        func(args)
    except BabysitError as e:
        print(f"babysit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("babysit: interrupted.", file=sys.stderr)
        return 130
    return 0


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
