"""babysit: train ConvNet image classifiers the way the course notes teach, with the checks done for you.

The same names the CLI uses::

    import babysit
    cfg = babysit.RunConfig()                               # every default, one place
    ds = babysit.load_dataset("digits")                     # `babysit data info digits`
    splits = babysit.split_dataset(ds, seed=0)
    print(babysit.format_summary(babysit.summary(cfg.model.spec, (1, 8, 8), 10)))   # `babysit summary`
    result = babysit.train(cfg)                             # `babysit train`
    print(babysit.evaluate_run(result.run.path, "test").accuracy)                   # `babysit eval`
    print(babysit.evaluate_run(result.run.path, "test", tta="flip,translate").tta_accuracy)   # `--tta`
    babysit.check(cfg); babysit.diagnose(result.run.path); babysit.report(result.run.path)  # `babysit check` ...
    ens = babysit.ensemble(seeds=5, cfg=cfg, name="five")  # `babysit ensemble --seeds=5`; also runs, search=,
    print(ens.format())                                     # snapshots=, checkpoints= with last=
    babysit.distill(ens.path, overrides={"model.spec": "conv3-16 relu pool2 fc"})   # `babysit distill ENS`
    print(babysit.baseline("knn", cfg).test_acc)            # `babysit baseline knn`
    found = babysit.search(cfg, ["optim.lr=loguniform(1e-4,1)"])   # `babysit search`: found.best, found.study
    done = babysit.recipe(babysit.apply_overrides(cfg, {"recipe.budget": "3m"}))   # `babysit recipe`
    print(babysit.gradcheck(my_layer, (x,)).format())       # any nn.Module / autograd.Function
    clf = babysit.load_model(result.run.path)              # raw images (N, H, W[, C]) -> probabilities (N, K)
    print(babysit.predict(result.run.path, ["a.png", "folder/"]).top(5))     # `babysit predict RUN a.png folder/`
    babysit.export(result.run.path, "onnx"); babysit.convert(result.run.path)  # `babysit export` / `convert`
    folded = babysit.fold_bn(model); sliding = babysit.fully_conv(model)      # BN folded; FC -> CONV score maps
    ft = babysit.finetune(result.run.path, {"data.name": "my.npz", "transfer.strategy": "auto"})  # `babysit finetune`
"""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use, so `babysit --help`
    # and `import babysit` need no torch
    from babysit.baseline.run import BaselineResult
    from babysit.baseline.run import run_baseline as baseline
    from babysit.commands import check, diagnose, report
    from babysit.config import RunConfig, apply_overrides, load_toml
    from babysit.data import (
        Augment,
        Dataset,
        ImageSet,
        Preprocessor,
        Splits,
        dataset_info,
        get_dataset,
        list_augmentations,
        load_dataset,
        make_augment,
        parse_pipeline,
        split_dataset,
    )
    from babysit.data.split import prepare_data
    from babysit.deploy import Classifier, Predictions, load_model, predict
    from babysit.deploy import convert_run as convert
    from babysit.deploy import export_run as export
    from babysit.ensemble import distill, ensemble, evaluate_ensemble, load_ensemble
    from babysit.errors import BabysitError
    from babysit.experiment import evaluate_run, train
    from babysit.models import build, format_summary, init_weights, parse, summary
    from babysit.models.convert import fully_conv
    from babysit.models.fold import fold_bn
    from babysit.monitor.gradcheck import gradcheck
    from babysit.recipe import RecipeResult, recipe
    from babysit.rundir import RunDir
    from babysit.start import Plan, fresh_start, load_run, make_model, plan_run
    from babysit.train.loop import Callback, LoopState, TensorData, evaluate, fit
    from babysit.transfer import FinetuneResult, finetune
    from babysit.tune.search import SearchResult, search

__version__ = "0.1.0"  # the one place; pyproject.toml must agree (tests/test_startup.py checks)

__all__ = ["Augment", "Plan", "fresh_start", "plan_run", "list_augmentations", "make_augment", "parse_pipeline",
           "BabysitError", "Callback", "Dataset", "distill", "ensemble", "evaluate_ensemble", "load_ensemble",
           "ImageSet", "LoopState", "Preprocessor", "RunConfig", "RunDir",
           "Splits", "TensorData", "apply_overrides", "build", "check", "dataset_info", "diagnose", "evaluate",
           "evaluate_run", "fit", "gradcheck", "report",
           "format_summary", "get_dataset", "init_weights", "load_dataset", "load_run", "load_toml", "make_model",
           "parse", "prepare_data", "split_dataset", "summary", "train", "baseline", "BaselineResult", "search",
           "SearchResult", "recipe", "RecipeResult", "Classifier", "Predictions", "load_model", "predict", "convert",
           "export", "fully_conv", "fold_bn", "finetune",
           "FinetuneResult"]

__getattr__, __dir__ = attach(__name__)
