"""The ``babysit`` command: parse -> config -> one library call.

A user's mistake (a :class:`BabysitError`) prints one sentence and exits with its code (2 by
default), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from babysit import __version__
from babysit import config as C
from babysit.clihelp import DefaultsHelp, Parser, add_config_options, check_command, unknown_option
from babysit.errors import BabysitError

# Only light modules above: `babysit --help` and every argument mistake answer without importing torch
# (tests/test_startup.py checks). Each command imports what it needs inside its function.


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    """The --section.key options given; a repeated one (--search.space) is joined into one list."""
    return {k[4:]: ",".join(v) if isinstance(v, list) else v for k, v in vars(args).items()
            if k.startswith("cfg:") and v is not None}


def cmd_train(args: argparse.Namespace) -> None:
    if args.resume:
        if args.config or _overrides(args) or args.tensorboard:
            raise BabysitError("--resume continues a run with its own saved config; drop --config and the "
                               "--section.key options, or start a new run instead.")
        from babysit.experiment import train

        train(C.RunConfig(), resume=args.resume)
        return
    # The config before the import: a mistake in it is answered without loading torch (seconds).
    cfg = C.load_toml(args.config) if args.config else C.RunConfig()
    cfg = C.apply_overrides(cfg, {**({"monitor.tensorboard": "true"} if args.tensorboard else {}), **_overrides(args)})
    from babysit.experiment import train

    train(cfg, out=args.out, name=args.name)


def cmd_eval(args: argparse.Namespace) -> None:
    from babysit.rundir import EnsembleDir

    if EnsembleDir.holds_one(args.run):  # an ensemble directory: its averaged probabilities
        if args.weights != "best":
            raise BabysitError("--weights picks one run's weights; an ensemble's members are listed in its "
                               "ensemble.json, so drop --weights.")
        from babysit.ensemble.make import evaluate_ensemble
        from babysit.experiment import format_confusion

        res = evaluate_ensemble(args.run, args.split, args.device, args.tta)
    else:
        from babysit.experiment import evaluate_run, format_confusion

        res = evaluate_run(args.run, args.split, args.device, args.tta, args.weights)
    for warning in res.warnings:
        print(f"warning: test-time augmentation: {warning}", flush=True)
    from babysit.review.metrics import format_per_class

    n = int(res.confusion.sum())
    top5 = f", top-5 accuracy {res.top5:.4f}" if res.top5 is not None else ""
    print(f"{res.split}: accuracy {res.accuracy:.4f} ({round(res.accuracy * n)}/{n}){top5}, loss {res.loss:.4f}")
    for task, acc in res.tasks.items():  # multi-task: every head (the confusion matrix below is the first task's)
        print(f"{res.split}: task {task} accuracy {acc:.4f}")
    if res.tta_accuracy is not None:
        print(f"{res.split} with test-time augmentation ({res.tta}: {res.tta_views} views averaged): accuracy "
              f"{res.tta_accuracy:.4f} ({round(res.tta_accuracy * n)}/{n}), {res.tta_accuracy - res.accuracy:+.4f}; "
              "confusion matrix of the averaged prediction:")
    print(format_confusion(res))
    print(format_per_class(res.classes, res.confusion))


def cmd_predict(args: argparse.Namespace) -> None:
    from babysit.deploy.predict import format_predictions, predict, write_csv

    if args.top < 1:
        raise BabysitError(f"--top {args.top} shows no class; give 1 or more, e.g. --top 5.")
    pred = predict(args.run, args.inputs, args.tta, args.weights, args.device)
    print(format_predictions(pred, args.top))
    if args.csv:
        print(f"predictions: {write_csv(pred, args.csv, args.top)}")


def cmd_export(args: argparse.Namespace) -> None:
    from babysit.deploy.export import export_run

    print(export_run(args.run, args.format, args.out, args.weights).format_text())


def cmd_convert(args: argparse.Namespace) -> None:
    if not args.fully_conv:
        raise BabysitError("say which conversion: --fully-conv (every FC layer written as the equivalent CONV).")
    from babysit.deploy.convert import convert_run

    print(convert_run(args.run, args.out, args.weights).format_text())


def cmd_ensemble(args: argparse.Namespace) -> None:
    from babysit.ensemble.members import check_choice

    overrides = bool(args.config or _overrides(args))
    check_choice(args.runs, args.seeds, args.search, args.snapshots, args.checkpoints, args.top, args.last, overrides)
    cfg = _config(args) if args.seeds else None  # a mistake in it is answered before torch loads
    from babysit.ensemble.make import ensemble

    result = ensemble(args.runs, seeds=args.seeds, cfg=cfg, search=args.search, top=args.top,
                      snapshots=args.snapshots, checkpoints=args.checkpoints, last=args.last, weights=args.weights,
                      weighted=args.weighted, out=args.out, name=args.name, device=args.device)
    print(result.format())
    print(f"ensemble directory {result.path} (`babysit eval {result.path}`, `babysit distill {result.path}`)")


def cmd_distill(args: argparse.Namespace) -> None:
    base = C.load_toml(args.config) if args.config else None
    C.apply_overrides(base or C.RunConfig(), _overrides(args))  # a mistake in the options, before torch loads
    from babysit.ensemble.distill import distill

    distill(args.ensemble, base, _overrides(args), out=args.out, name=args.name)


def _input_shape(text: str) -> tuple[int, int, int]:
    """``--input`` as (C, H, W): "1x28x28" -> (1, 28, 28)."""
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise BabysitError(f"--input must look like CxHxW, e.g. 1x28x28 or 3x32x32; got {text!r}.")
    return shape[0], shape[1], shape[2]


def cmd_summary(args: argparse.Namespace) -> None:
    from babysit.models.auto import published_input
    from babysit.models.summary import format_summary, summary

    published = published_input(args.spec)  # a case study (vgg16) defaults to its published input and classes
    shape = _input_shape(args.input or (f"{published[0][0]}x{published[0][1]}x{published[0][2]}" if published
                                        else "1x28x28"))
    classes = args.classes or (published[1] if published else 10)
    print(format_summary(summary(args.spec, shape, classes, batch_size=args.batch_size)))


def cmd_data_info(args: argparse.Namespace) -> None:
    from babysit.data.sources import dataset_info, load_dataset

    print(dataset_info(load_dataset(args.name, channels=args.channels, size=args.size)))


def cmd_data_get(args: argparse.Namespace) -> None:
    from babysit.data.locate import get_dataset

    path = get_dataset(args.name, Path(args.dest) if args.dest else None)
    print(f"{args.name} is ready in {path}")


def cmd_data_show(args: argparse.Namespace) -> None:
    extra = {"data.name": args.name, **({"data.preprocess": args.preprocess} if args.preprocess else {})}
    cfg = _config(args, **extra)
    from babysit.data.show import preprocess_grid

    path, described = preprocess_grid(cfg, args.out, args.count)
    print(f"{described}\ngrid (top: original, bottom: processed): {path}")


def cmd_augment_list(args: argparse.Namespace) -> None:
    from babysit.data.augment import AUGMENTATIONS

    width = max(len(n) for n in AUGMENTATIONS)
    for name, info in AUGMENTATIONS.items():
        print(f"{name:<{width}}  {info.stage:<11}  {info.meaning}")
    print("set them with --augment.pipeline=flip-h,translate-2,... and the fill of uncovered pixels with "
          "--augment.fill=constant|edge|reflect|symmetric|wrap")


def cmd_augment_preview(args: argparse.Namespace) -> None:
    cfg = _config(args, **({"data.name": args.data} if args.data else {}))
    from babysit.data.augment import augment_warnings, parse_pipeline
    from babysit.data.preview import augment_grid

    for warning in augment_warnings(parse_pipeline(cfg.augment.pipeline), cfg.data.name, cfg.data.preprocess):
        print(f"warning: {warning}")
    path, augment = augment_grid(cfg, args.out, args.count, args.draws)
    if not cfg.augment.pipeline:
        print("no augment.pipeline given; previewing a showcase (set --augment.pipeline=...)")
    print(f"{augment}\ngrid (first column: original, then {args.draws} training draws): {path}")


def _config(args: argparse.Namespace, **extra: str) -> C.RunConfig:
    """--config file, then ``extra`` (from positional arguments), then the --section.key options."""
    cfg = C.load_toml(args.config) if args.config else C.RunConfig()
    return C.apply_overrides(cfg, {**extra, **_overrides(args)})


def cmd_schedule(args: argparse.Namespace) -> None:
    if args.name is None:
        from babysit.train.schedules import list_schedules

        print("schedules: " + ", ".join(list_schedules()) + " (`babysit schedule NAME --plot out.png` draws one)")
        return
    cfg = _config(args, **{"schedule.name": args.name})
    from babysit.train.loop import epochs_for
    from babysit.train.optim import check_choices
    from babysit.train.schedules import lr_curve

    check_choices(cfg)
    epochs = epochs_for(cfg, args.steps_per_epoch)
    lrs = lr_curve(cfg.schedule, cfg.optim.lr, epochs, args.steps_per_epoch)
    for epoch in range(epochs):
        print(f"epoch {epoch + 1:3d}: lr {lrs[epoch * args.steps_per_epoch]:.6g} at its first step")
    if args.plot:
        from babysit.figures import plot_schedule

        print(f"plot: {plot_schedule(lrs, args.steps_per_epoch, args.plot, title=args.name)}")


def cmd_lr_find(args: argparse.Namespace) -> None:
    import json

    cfg = _config(args)
    from babysit.tune.lr_find import apply_bounds, format_result, result_json, run_lr_find

    result = run_lr_find(cfg, plot=args.plot)
    print(format_result(result, cfg.optim.lr, default=cfg.optim.lr == C.OptimConfig().lr))
    if args.plot:
        Path(args.plot).with_suffix(".json").write_text(json.dumps(result_json(result)) + "\n")
        print(f"plot: {args.plot} (numbers in {Path(args.plot).with_suffix('.json')})")
    if args.write_config:
        Path(args.write_config).write_text(C.dumps_toml(apply_bounds(cfg, result, args.schedule)))
        print(f"config with the {args.schedule} bounds: {args.write_config} "
              f"(`babysit train --config {args.write_config}`)")


def cmd_init_check(args: argparse.Namespace) -> None:
    from babysit.models.init import format_init_check, init_check

    shape = _input_shape(args.input)
    schemes = tuple(s.strip() for s in args.schemes.split(",") if s.strip())
    results = init_check(args.spec, shape, schemes, args.classes, args.batch_size)
    print(format_init_check(results))
    if args.plot:
        from babysit.figures import plot_init_check

        print(f"plot: {plot_init_check(results, args.plot)}")


def cmd_check(args: argparse.Namespace) -> None:
    cfg = _config(args)
    from babysit.commands import ChecksFailed, check, failed

    _, results = check(cfg, out=args.out, name=args.name)
    if failed(results):
        raise ChecksFailed(f"{len(failed(results))} of {len(results)} sanity checks failed "
                           f"({', '.join(failed(results))}); the lines above say what to suspect.")


def cmd_gradcheck(args: argparse.Namespace) -> None:
    cfg = _config(args)
    from babysit.commands import ChecksFailed, gradcheck_config

    result = gradcheck_config(cfg, points=args.points, entries=args.entries)
    print(result.format())
    if not result.passed:
        raise ChecksFailed("the gradient check failed: a relative error above 1e-2 means the backward pass is "
                           "probably wrong for the tensors marked above.")


def cmd_diagnose(args: argparse.Namespace) -> None:
    from babysit.commands import diagnose
    from babysit.review.findings import format_findings
    from babysit.rundir import RunDir

    print(format_findings(diagnose(args.run)))
    print(f"written to {RunDir(args.run).findings}")


def cmd_report(args: argparse.Namespace) -> None:
    from babysit.commands import report

    print(f"report: {report(args.run, args.device)}")


def cmd_baseline(args: argparse.Namespace) -> None:
    cfg = _config(args)  # before the import: a mistake in it is answered without loading torch
    from babysit.baseline.run import BASELINES, format_table, run_all, run_baseline

    if args.baseline == "all":
        if args.name:
            raise BabysitError("--name names one result directory, but `babysit baseline all` makes one per "
                               "baseline; drop --name (each gets baseline-NAME-DATA-DATE-TIME in --out).")
        results = run_all(cfg, args.out)
    else:
        BASELINES.get(args.baseline)  # an unknown name: the registry's one sentence, before any data is read
        results = [run_baseline(args.baseline, cfg, args.out, args.name)]
    print(format_table(results))


def cmd_search(args: argparse.Namespace) -> None:
    over = _overrides(args)
    if args.resume:
        if args.config or set(over) - {"search.workers"}:
            raise BabysitError("--resume continues a search with its own saved config (only --search.workers may "
                               "change); drop --config and the other --section.key options.")
        workers = C.apply_overrides(C.RunConfig(), over).search.workers if over else None
        from babysit.tune.search import search

        search(resume=args.resume, workers=workers)
        return
    cfg = C.load_toml(args.config) if args.config else C.RunConfig()
    cfg = C.apply_overrides(cfg, over)
    from babysit.tune.space import check_sampler, parse_space

    check_sampler(parse_space(cfg.search.space, cfg), cfg.search.sampler)  # a mistake answered before torch loads
    from babysit.tune.search import search

    search(cfg, out=args.out)


def cmd_recipe(args: argparse.Namespace) -> None:
    over = _overrides(args)
    if args.resume:
        if args.config or over or args.budget or args.name:
            raise BabysitError("--resume continues a recipe with its own saved config and budget; drop --config, "
                               "--budget, --name and the --section.key options.")
        from babysit.recipe import recipe

        recipe(resume=args.resume)
        return
    extra = {**({"recipe.budget": args.budget} if args.budget else {}), **({"recipe.name": args.name} if args.name
                                                                           else {})}
    cfg = _config(args, **extra)
    C.validate(cfg)  # a mistake (a budget of "ten minutes") is answered before torch loads
    from babysit.recipe import recipe

    recipe(cfg, out=args.out)


def cmd_finetune(args: argparse.Namespace) -> None:
    overrides = _overrides(args)
    if args.config:  # a TOML file's keys, then the options (the source run supplies everything else)
        overrides = {**{f"{sec}.{k}": v for sec, vals in C.load_toml_dict(args.config).items()
                        for k, v in vals.items()}, **overrides}
    C.apply_overrides(C.RunConfig(), overrides)  # an unknown key or bad value is answered before torch loads
    from babysit.transfer import finetune

    finetune(args.source, overrides, out=args.out, name=args.name)


def make_parser() -> Parser:
    parser = Parser(prog="babysit", description="Train ConvNet image classifiers the way the course notes teach, "
                    "with the practitioner's checks done for you.")
    parser.add_argument("--version", action="version", version=f"babysit {__version__}")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="warnings only: no progress, epoch lines or bars (anywhere on the line)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug messages too (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model and write a run directory", formatter_class=DefaultsHelp)
    p.add_argument("--config", help="TOML file with [section] tables of options")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--out", default="runs", help="folder in which the run directory is made")
    p.add_argument("--name", default="", help="run directory name (default: DATA-DATE-TIME)")
    p.add_argument("--tensorboard", action="store_true", help="same as --monitor.tensorboard=true")
    add_config_options(p)
    p.set_defaults(func=cmd_train, command_parser=p)

    p = sub.add_parser("search", help="hyper-parameter search: random on a log scale, coarse to fine, early kill",
                       formatter_class=DefaultsHelp)
    p.add_argument("--config", help="TOML file with [section] tables of options (the [search] section too)")
    p.add_argument("--resume", metavar="DIR", help="continue a stopped search (search/NAME); finished trials are kept")
    p.add_argument("--out", default="search", help="folder in which the search folder is made")
    add_config_options(p)
    p.set_defaults(func=cmd_search, command_parser=p)

    p = sub.add_parser("recipe", help="the whole recipe on your data within a time budget: checks, lr, search, "
                       "final training, ensemble, baselines, test, report", formatter_class=DefaultsHelp)
    p.add_argument("--budget", help="wall-clock time for everything, e.g. 3m, 20m, 1h (same as --recipe.budget)")
    p.add_argument("--resume", metavar="DIR", help="continue a stopped recipe (recipes/NAME) at the step in flight")
    p.add_argument("--out", default="recipes", help="folder in which the recipe folder is made")
    p.add_argument("--name", default="", help="recipe folder name (same as --recipe.name; default: DATA-DATE-TIME)")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    add_config_options(p)
    p.set_defaults(func=cmd_recipe, command_parser=p)

    p = sub.add_parser("eval", help="accuracy and confusion matrix of a run's best weights")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", help="train, val or test")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--tta", default="", metavar="VIEWS",
                   help="also average predictions over test-time views: flip, flip-v, translate[-P], random-N "
                        "(comma-separated, e.g. flip,translate)")
    p.add_argument("--weights", default="best", metavar="NAME",
                   help="which of the run's weights: best, last, ema, swa, snapshot-N or epoch-N")
    p.set_defaults(func=cmd_eval, command_parser=p)

    p = sub.add_parser("predict", help="class, probability and top-k of new images, from a run or ensemble directory")
    p.add_argument("run", help="run or ensemble directory")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders of images (class sub-folders give the accuracy) or .npz files")
    p.add_argument("--top", type=int, default=5, help="how many most probable classes to show per image")
    p.add_argument("--tta", default="", metavar="VIEWS", help="average over test-time views, as for eval")
    p.add_argument("--csv", metavar="FILE", help="also write one row per image to this CSV file")
    p.add_argument("--weights", default="best", metavar="NAME",
                   help="which of the run's weights: best, last, ema, swa, snapshot-N or epoch-N")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_predict, command_parser=p)

    p = sub.add_parser("export", help="the network with its preprocessing (raw pixels in, probabilities out) as "
                       "ONNX or TorchScript, BN folded")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", default="onnx", help="onnx or torchscript")
    p.add_argument("--out", metavar="FILE", help="file to write (default: RUN/model.onnx or RUN/model.pt)")
    p.add_argument("--weights", default="best", metavar="NAME",
                   help="which of the run's weights: best, last, ema, swa, snapshot-N or epoch-N")
    p.set_defaults(func=cmd_export, command_parser=p)

    p = sub.add_parser("convert", help="a new run directory with every FC layer written as the equivalent CONV")
    p.add_argument("run", help="run directory")
    p.add_argument("--fully-conv", action="store_true", help="FC -> CONV (the net slides over larger images)")
    p.add_argument("--out", metavar="DIR", help="run directory to write (default: RUN-fullyconv beside RUN)")
    p.add_argument("--weights", default="best", metavar="NAME",
                   help="which of the run's weights: best, last, ema, swa, snapshot-N or epoch-N")
    p.set_defaults(func=cmd_convert, command_parser=p)

    p = sub.add_parser("ensemble", help="average the softmax probabilities of several models; writes an ensemble "
                       "directory", formatter_class=DefaultsHelp)
    p.add_argument("runs", nargs="*", metavar="RUN", help="run directories (members)")
    p.add_argument("--seeds", type=int, default=0, help="train the config (--config, --section.key) with N seeds")
    p.add_argument("--search", metavar="DIR", help="a `babysit search` directory: its best trials by val accuracy")
    p.add_argument("--top", type=int, help="with --search: how many trials (5 when not given)")
    p.add_argument("--snapshots", metavar="RUN", help="the cycle-end snapshots of a cosine-restarts run")
    p.add_argument("--checkpoints", metavar="RUN", help="the last epochs' weights of a run (checkpoint.keep_last)")
    p.add_argument("--last", type=int, help="with --checkpoints: how many of the last epochs (2 when not given)")
    p.add_argument("--weights", default="best", metavar="NAME",
                   help="with RUN members: which weights of each (best, last, ema, swa, snapshot-N, epoch-N)")
    p.add_argument("--weighted", action="store_true", help="weight each member's probabilities by its val accuracy")
    p.add_argument("--out", default="runs", help="folder in which the ensemble directory is made")
    p.add_argument("--name", default="", help="ensemble directory name (default: ensemble-DATE-TIME)")
    p.add_argument("--device", default="cpu", help="where the members predict: cpu, cuda or auto")
    p.add_argument("--config", help="with --seeds: TOML file with [section] tables of options")
    add_config_options(p)
    p.set_defaults(func=cmd_ensemble, command_parser=p)

    p = sub.add_parser("distill", help="train a network on an ensemble's soft targets plus the labels",
                       formatter_class=DefaultsHelp)
    p.add_argument("ensemble", help="ensemble directory (`babysit ensemble`)")
    p.add_argument("--config", help="TOML file for the student (default: the first member's config)")
    p.add_argument("--out", default="runs", help="folder in which the run directory is made")
    p.add_argument("--name", default="", help="run directory name (default: DATA-DATE-TIME)")
    add_config_options(p)
    p.set_defaults(func=cmd_distill, command_parser=p)

    p = sub.add_parser("finetune", help="train a new run from a finished run's network: linear probe, top layers, "
                       "all layers, or auto (the notes' table)", formatter_class=DefaultsHelp)
    p.add_argument("source", metavar="FROM_RUN", help="the run directory whose network is reused")
    p.add_argument("--config", help="TOML file with [section] tables of options, over the source run's config")
    p.add_argument("--out", default="runs", help="folder in which the run directory is made")
    p.add_argument("--name", default="", help="run directory name (default: finetune-DATA-STRATEGY-DATE-TIME)")
    add_config_options(p)
    p.set_defaults(func=cmd_finetune, command_parser=p)

    p = sub.add_parser("summary", help="per-layer volumes, memory, weights and FLOPs of a spec")
    p.add_argument("spec", nargs="?", default=C.ModelConfig().spec,
                   help="architecture spec or name: auto, lecture, lenet5, alexnet, zfnet, vgg11, vgg16, googlenet, "
                        "resnet18, resnet34, resnet20, vgg-small (default: the default model)")
    p.add_argument("--input", default="", help="input volume CxHxW (default: a case study's published input, "
                                               "else 1x28x28)")
    p.add_argument("--classes", type=int, default=0, help="number of classes (size of the last fc; default: a case "
                                                          "study's published count, else 10)")
    p.add_argument("--batch-size", type=int, default=1, help="memory is reported for this many images")
    p.set_defaults(func=cmd_summary, command_parser=p)

    data = sub.add_parser("data", help="get or describe data sets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("info", help="counts, shape, classes and per-class balance")
    p.add_argument("name", help="digits, mnist, fashion-mnist, an image folder or a .npz file")
    p.add_argument("--channels", type=int, default=0, help="convert to 1 or 3 channels (0 keeps)")
    p.add_argument("--size", type=int, default=0, help="resize to SIZE x SIZE (0 keeps)")
    p.set_defaults(func=cmd_data_info, command_parser=p)
    p = data.add_parser("get", help="obtain mnist or fashion-mnist where this machine can")
    p.add_argument("name", help="mnist or fashion-mnist")
    p.add_argument("--dest", help="folder to put the files in (default: the user cache)")
    p.set_defaults(func=cmd_data_get, command_parser=p)

    p = data.add_parser("show", help="picture of training images before and after the preprocessing")
    p.add_argument("name", help="digits, mnist, fashion-mnist, an image folder or a .npz file")
    p.add_argument("--preprocess", help="same as --data.preprocess (e.g. zca, pca, patch-white)")
    p.add_argument("--out", default="preprocess.png", help="PNG file to write")
    p.add_argument("--count", type=int, default=10, help="images shown (one per class first)")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    add_config_options(p)
    p.set_defaults(func=cmd_data_show, command_parser=p)

    aug = sub.add_parser("augment", help="list augmentations or preview a pipeline").add_subparsers(
        dest="augment_command", required=True)
    p = aug.add_parser("list", help="every augmentation token with its stage and meaning")
    p.set_defaults(func=cmd_augment_list, command_parser=p)
    p = aug.add_parser("preview", help="picture of training images and augmented draws of them")
    p.add_argument("--data", help="same as --data.name")
    p.add_argument("--out", default="augment.png", help="PNG file to write")
    p.add_argument("--count", type=int, default=8, help="training images (rows), one per class first")
    p.add_argument("--draws", type=int, default=7, help="augmented versions of each image (columns)")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    add_config_options(p)
    p.set_defaults(func=cmd_augment_preview, command_parser=p)

    p = sub.add_parser("schedule", help="list the learning-rate schedules, or print / plot one")
    p.add_argument("name", nargs="?", help="schedule name (none: list them)")
    p.add_argument("--steps-per-epoch", type=int, default=100, help="mini-batches per epoch to draw")
    p.add_argument("--plot", metavar="PNG", help="draw lr against epoch into this PNG file")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    add_config_options(p)
    p.set_defaults(func=cmd_schedule, command_parser=p)

    p = sub.add_parser("lr-find", help="the LR range test: loss against an exponentially growing lr")
    p.add_argument("--plot", metavar="PNG", default="lr_find.png", help="where to draw the curve (and its .json)")
    p.add_argument("--write-config", metavar="TOML", help="write the config with the found bounds applied")
    p.add_argument("--schedule", default="onecycle", choices=("onecycle", "cyclical"),
                   help="the schedule --write-config sets up")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    add_config_options(p)
    p.set_defaults(func=cmd_lr_find, command_parser=p)

    p = sub.add_parser("init-check", help="activation std per layer at initialisation, per init scheme")
    p.add_argument("spec", nargs="?", default="[fc-500 relu]*10 fc",
                   help="architecture spec (default: the lecture's 10-layer ReLU net)")
    p.add_argument("--input", default="1x1x1000", help="input volume CxHxW (unit-Gaussian inputs)")
    p.add_argument("--schemes", default="normal-0.01,xavier,he,orthogonal,lsuv,data", help="comma-separated")
    p.add_argument("--classes", type=int, default=10, help="number of classes (size of the last fc)")
    p.add_argument("--batch-size", type=int, default=256, help="inputs drawn")
    p.add_argument("--plot", metavar="PNG", help="draw std per layer into this PNG file")
    p.set_defaults(func=cmd_init_check, command_parser=p)

    p = sub.add_parser("check", help="sanity checks: initial loss, regularisation, overfit 20 images, zero inputs")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    p.add_argument("--out", default="runs", help="folder in which the run directory is made")
    p.add_argument("--name", default="", help="run directory name (default: DATA-check-DATE-TIME)")
    add_config_options(p)
    p.set_defaults(func=cmd_check, command_parser=p)

    p = sub.add_parser("gradcheck", help="analytic vs numerical gradient of the model + loss, per tensor")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    p.add_argument("--points", type=int, default=4, help="training images in the check (use few)")
    p.add_argument("--entries", type=int, default=10, help="entries checked per tensor, at random")
    add_config_options(p)
    p.set_defaults(func=cmd_gradcheck, command_parser=p)

    p = sub.add_parser("baseline", help="classical baselines: knn, linear (svm / softmax), two-layer, or all",
                       formatter_class=DefaultsHelp)
    p.add_argument("baseline", metavar="NAME", help="knn, linear, two-layer, or all (every one, one table)")
    p.add_argument("--config", help="TOML file with [section] tables of options")
    p.add_argument("--out", default="runs", help="folder in which the result directory is made")
    p.add_argument("--name", default="", help="result directory name (default: baseline-NAME-DATA-DATE-TIME)")
    add_config_options(p)
    p.set_defaults(func=cmd_baseline, command_parser=p)

    p = sub.add_parser("diagnose", help="findings in words from a run's curves and layer statistics")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=cmd_diagnose, command_parser=p)

    p = sub.add_parser("report", help="write RUN/report.html: curves, layer statistics, filters, confusion")
    p.add_argument("run", help="run directory")
    p.add_argument("--device", default="cpu", help="where to score val when the run has no analysis yet")
    p.set_defaults(func=cmd_report, command_parser=p)
    return parser


VERBOSITY = ("-q", "--quiet", "-v", "--verbose", "-vv")


def _verbosity_first(argv: list[str]) -> list[str]:
    """-q / -v may come anywhere (``babysit train -q``): moved before the command, where the parser reads them."""
    head = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:head] if a in VERBOSITY]
    return [f for f in flags for f in (["-v", "-v"] if f == "-vv" else [f])] + \
        [a for a in argv[:head] if a not in VERBOSITY] + argv[head:]


def main(argv: list[str] | None = None) -> int:
    from babysit.log import set_verbosity

    parser = make_parser()
    argv = _verbosity_first(sys.argv[1:] if argv is None else list(argv))
    try:
        check_command(parser, [a for a in argv if a not in VERBOSITY])
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            raise unknown_option(args.command_parser, unknown[0].split("=")[0])
        func: Callable[[argparse.Namespace], None] = args.func
        set_verbosity(args.verbose - args.quiet)  # the library's logging: info by default
        func(args)
    except BabysitError as e:
        print(f"babysit: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush cannot fail again
        return 0
    except OSError as e:  # the file system refused (disk full, read-only, permissions): not a bug, say which file
        where = f" {e.filename}" if e.filename else ""
        print(f"babysit: error: cannot access{where} ({e.strerror or e}); check the path, free space and "
              "permissions, then run again.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("babysit: interrupted.", file=sys.stderr)
        return 130
    return 0


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
