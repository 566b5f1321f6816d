"""One run setup below every entry point: validate a config against its data once, return the plan.

``babysit train``, ``check``, ``gradcheck``, ``lr-find`` (and whatever starts many runs) begin with::

    plan = plan_run(cfg)                 # every mistake refused here, in one wording each
    model, data, augment = fresh_start(plan)

:func:`check_config` holds what needs no data (value ranges, names, the spec, the augmentation
pipeline), :func:`check_data` what the data decides (layer geometry for this input, the batch against
the training split). Both run before a run directory is made, so a mistake never leaves one behind.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from babysit import config as C
from babysit.data.augment import Augment, AugmentOp, augment_warnings, check_augment, make_augment
from babysit.data.preprocess import KINDS, Preprocessor
from babysit.data.sources import Dataset, ImageSet
from babysit.data.split import Splits, prepare_data
from babysit.data.stream import MappedImages
from babysit.errors import BabysitError
from babysit.limits import check_memory, human_bytes
from babysit.models.auto import is_named, parse_spec, resolve_spec
from babysit.models.build import build
from babysit.models.init import init_weights, needs_data
from babysit.models.shapes import infer_shapes
from babysit.models.spec import BatchNorm, Branch, Conv, GlobalAvgPool, Pool, Residual, Spec, parse
from babysit.models.summary import memory_estimate, summary
from babysit.rundir import RunDir
from babysit.train import distributed as ddp
from babysit.train.checkpoint import load_checkpoint, seed_all
from babysit.train.loop import TensorData, auto_batch_size, check_batch_size, resolve_length
from babysit.train.multitask import label_matrix, parse_heads, parse_task_weights
from babysit.train.optim import check_choices
from babysit.train.transfer import HeadOnly, apply_freezing, load_source, probe_features

VECTOR_KINDS = ("pca", "pca-white")  # preprocessings whose output has no spatial layout
SPATIAL = (Conv, Pool, GlobalAvgPool, Residual, Branch)  # layers that need rows and columns


@dataclass(frozen=True)
class Plan:
    """A config checked against its data, and everything the entry points derive from it once."""

    cfg: C.RunConfig
    dataset: Dataset
    splits: Splits
    spec: Spec  # the parsed model.spec
    ops: tuple[AugmentOp, ...]  # the parsed augment.pipeline (empty: no augmentation)
    input_shape: tuple[int, int, int]  # (C, H, W) of the images, before preprocessing
    num_classes: int
    steps_per_epoch: int
    device: torch.device
    warnings: tuple[str, ...]  # config warnings (a flip that changes a digit), printed by the caller


def resolve_device(name: str, option: str = "--train.device") -> torch.device:
    """``auto`` picks CUDA when available; anything else is passed to torch.device. ``option`` is how the
    user typed the device (``--train.device`` for train, ``--device`` for eval), for the error's advice."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BabysitError(f"unknown device {name!r}; use {option}=auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BabysitError(f"device {name!r} was asked for but no CUDA GPU is available; use {option}=cpu.")
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):  # meta holds no numbers; others cannot run babysit's ops
        raise BabysitError(f"device {name!r} cannot train or evaluate (it holds no values or is not supported); "
                           f"use {option}=auto, cpu or cuda.")
    return dev


def cpu_threads(requested: int = 0) -> int:
    """The CPU threads a run uses: ``requested``, else $OMP_NUM_THREADS when set, else every core this
    process may use (its CPU affinity, which containers and ``taskset`` narrow) divided by the processes torchrun
    started on this machine (at least 1 each), so DDP ranks do not fight over cores. (torchrun itself sets
    OMP_NUM_THREADS=1 for N > 1 processes when it is unset; set it, or --train.threads, to give each more.)"""
    if requested > 0:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // ddp.ranks().local_world)


def set_hardware(cfg: C.RunConfig, device: torch.device) -> None:
    """Apply ``cfg.train``'s hardware options to this process: CPU threads and deterministic kernels."""
    t = cfg.train
    if t.precision == "bf16" and device.type != "cuda":
        raise BabysitError("train.precision=bf16 autocasts on CUDA GPUs; on the CPU it is slower than fp32 on most "
                           "machines, so use --train.precision=fp32 (or train on a GPU).")
    torch.set_num_threads(cpu_threads(t.threads))
    if t.deterministic and device.type == "cuda":  # cuBLAS reads this when it starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(t.deterministic)
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = not t.deterministic and device.type == "cuda"


def resolve_auto(cfg: C.RunConfig, input_shape: tuple[int, int, int], n_train: int) -> C.RunConfig:
    """``cfg`` with its data-dependent defaults made concrete (a spec name, ``train.batch_size=0``, ``epochs=0``): what
    the run directory's config.toml records, so a resumed or repeated run never re-derives them."""
    model, train = cfg.model, cfg.train
    if is_named(model.spec):
        model = replace(model, spec=resolve_spec(model.spec, input_shape))
    if train.batch_size == 0:
        train = replace(train, batch_size=auto_batch_size(n_train))
    optim, world = cfg.optim, ddp.ranks().world
    if train.scale_lr and world > 1:  # the linear scaling rule, made concrete (config.toml holds what was trained)
        train = replace(train, batch_size=train.batch_size * world, scale_lr=False)
        optim = replace(optim, lr=optim.lr * world)
    return resolve_length(replace(cfg, model=model, train=train, optim=optim), n_train)  # epochs for the global batch



def config_warnings(cfg: C.RunConfig, steps_per_epoch: int) -> list[str]:
    """Settings that are legal but almost surely not what the user meant: an option the chosen update
    rule ignores, and a schedule constant left at its per-epoch default after ``schedule.unit=step``."""
    out = []
    default, o = C.OptimConfig(), cfg.optim
    for key, rules in C.READ_BY.items():
        if o.name not in rules and getattr(o, key) != getattr(default, key):
            out.append(f"optim.{key}={getattr(o, key)} is ignored by optim.name={o.name} (only "
                       f"{', '.join(rules)} read it); drop it, or choose one of those rules.")
    s, sd = cfg.schedule, C.ScheduleConfig()
    if s.name == "onecycle" and s.momentum_low > 0:  # one-cycle replaces the rule's own momentum by its cycle
        given = ""
        if o.name == "sgd" and o.momentum not in (0, default.momentum):
            given = f"optim.momentum={o.momentum}"
        elif o.name in C.READ_BY["betas"] and o.betas[0] != default.betas[0]:
            given = f"optim.betas' beta1={o.betas[0]}"
        if given:
            out.append(f"{given} is replaced by one-cycle's momentum cycle ({s.momentum_high:g} -> {s.momentum_low:g} "
                       f"-> {s.momentum_high:g}); set --schedule.momentum_low=0 to keep it fixed, or move the cycle "
                       "with --schedule.momentum_high.")
    if s.unit == "step":
        for key, names in (("step_size", ("step",)), ("k", ("exp", "inv-time", "inv-sqrt")),
                           ("half_cycle", ("cyclical",))):
            if s.name in names and getattr(s, key) == getattr(sd, key):
                value = getattr(s, key)
                out.append(f"schedule.{key}={value:g} is the per-epoch default, but schedule.unit=step counts it in "
                           f"steps ({steps_per_epoch} per epoch here); give it in steps, e.g. "
                           f"--schedule.{key}={value * steps_per_epoch if key != 'k' else value / steps_per_epoch:g}.")
    return out


def check_config(cfg: C.RunConfig) -> tuple[Spec | None, tuple[AugmentOp, ...]]:
    """What a config alone can get wrong: ranges, names (optimiser, schedule, loss, init, preprocessing),
    the spec's grammar and the augmentation pipeline. Returns the parsed spec (None while it is a name such
    as ``auto`` that the input decides) and pipeline."""
    C.validate(cfg)
    check_choices(cfg)
    kind = cfg.data.preprocess
    KINDS.get(kind)  # an unknown name is the registry's one sentence
    spec = None if is_named(cfg.model.spec) else parse_spec(cfg.model.spec)
    ops = tuple(check_augment(cfg))
    if cfg.monitor.tensorboard and importlib.util.find_spec("tensorboard") is None:  # an optional extra
        raise BabysitError("--monitor.tensorboard needs the tensorboard package, an optional extra: install it with "
                           "`pip install 'babysit[tensorboard]'` (or `pip install tensorboard`).")
    if cfg.distill.teacher and (ops or cfg.loss.name != "softmax"):
        raise BabysitError("distillation trains on the teacher's probabilities of the unaugmented training images "
                           "(computed once) plus the softmax loss on the labels, so drop --augment.pipeline and use "
                           "--loss.name=softmax.")
    if cfg.model.heads:
        parse_task_weights(cfg.loss.task_weights, parse_heads(cfg.model.heads))
        if cfg.distill.teacher or ops or cfg.loss.name not in ("softmax", "svm", "squared-hinge"):
            raise BabysitError("multi-task runs (model.heads) train on each task's labels with softmax or a hinge "
                               "loss, without distillation or augmentation (a mix would need soft targets for every "
                               "task); drop those options or train one task at a time.")
    if cfg.transfer.source and cfg.transfer.strategy == "auto":
        raise BabysitError("transfer.strategy=auto is chosen by measuring the data, which `babysit finetune` does; "
                           "start the run with `babysit finetune SOURCE --transfer.strategy=auto`.")
    if cfg.transfer.source and cfg.transfer.strategy == "linear-probe" and ops:
        raise BabysitError("the linear probe computes the features of the training images once, so it cannot "
                           "augment them; drop --augment.pipeline or use --transfer.strategy=top.")
    if kind in VECTOR_KINDS and spec is not None:
        spatial = [str(layer) for layer in spec.layers() if isinstance(layer, SPATIAL)]
        if spatial:
            raise BabysitError(f"data.preprocess={kind} turns each image into a vector of principal components (no "
                               f"rows and columns left for {spatial[0]}), so model.spec must be fully connected, "
                               "e.g. --model.spec='fc-256 relu fc'; or use zca, which whitens and keeps the image.")
    return spec, ops


def _against_data(cfg: C.RunConfig, spec: Spec | None, splits: Splits) -> tuple[C.RunConfig, Spec]:
    """After :func:`check_config`: resolve the automatic values against the data, parse the spec a name stood
    for, and :func:`check_data`. Returns the concrete config and the spec."""
    c, h, w = splits.train.input_shape
    shape = (cfg.data.pca_components or 1, 1, 1) if cfg.data.preprocess in VECTOR_KINDS else (c, h, w)
    cfg = resolve_auto(cfg, shape, len(splits.train))
    spec = spec if spec is not None else parse(cfg.model.spec)
    check_data(cfg, spec, splits)
    return cfg, spec


def check_data(cfg: C.RunConfig, spec: Spec, splits: Splits) -> None:
    """What the data decides: the layer geometry of ``spec`` for this input, and the mini-batch against the
    training split."""
    kind = cfg.data.preprocess
    if kind not in VECTOR_KINDS:  # a pca vector's length is only known once fitted; fc layers take any length
        c, h, w = splits.train.input_shape
        infer_shapes(spec, (c * cfg.data.patch_size**2, h, w) if kind == "patch-white" else (c, h, w),
                     output_size(cfg, splits))
    check_batch_size(cfg.train.batch_size, len(splits.train))
    n, b = len(splits.train), cfg.train.batch_size
    batch_norm = any(isinstance(layer, BatchNorm) for layer in spec.layers())
    ddp.check_shards(ddp.ranks(), n, b, batch_norm and not cfg.train.sync_bn)  # torchrun: rows for every process
    if n % b == 1 and batch_norm:
        other = next(k for k in range(b + 1, n + 1) if n % k != 1)
        raise BabysitError(f"the last mini-batch of every epoch would hold one image ({n:,} training images, batch "
                           f"{b}), and batch norm cannot normalise a batch of one; use --train.batch_size={other} "
                           f"or --data.limit={n - 1}.")


def device_memory(device: torch.device) -> tuple[int | None, str]:
    """(free bytes, words) where a run's tensors live: the GPU's free memory for CUDA, else None (the host's)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), f"GPU {device}"
    return None, "this machine"


def check_run_memory(cfg: C.RunConfig, spec: Spec, shape: tuple[int, int, int], num_classes: int, n_images: int,
                     device: torch.device, training: bool = True) -> None:
    """Refuse a run whose network or data cannot fit, before anything is allocated (``conv3-100000000``, a huge
    padding, ``--data.size=100000``): the summary table's parameters and activations at the mini-batch size
    (:func:`memory_estimate`) plus the ``n_images`` preprocessed images (float32) kept on the device."""
    if cfg.data.preprocess in VECTOR_KINDS:  # a pca vector's length is only known once fitted
        shape = (cfg.data.pca_components or math.prod(shape), 1, 1)
    elif cfg.data.preprocess == "patch-white":
        shape = (shape[0] * cfg.data.patch_size**2, shape[1], shape[2])
    batch = cfg.train.batch_size if training and cfg.train.batch_size > 0 else cfg.train.eval_batch_size
    est = memory_estimate(summary(spec, shape, num_classes, batch_size=max(1, batch)), training)
    data = n_images * math.prod(shape) * 4
    have, where = device_memory(device)
    check_memory(est.total + data, f"this {'run' if training else 'model'} ({est.describe()}, "
                 f"{human_bytes(data)} for {n_images:,} preprocessed images)",
                 "use a smaller network (fewer filters, less padding), a smaller --train.batch_size or "
                 "--data.size, or fewer images (--data.limit)", have, where)


def check_against(cfg: C.RunConfig, splits: Splits) -> tuple[C.RunConfig, Spec]:
    """:func:`check_config`, then the automatic values resolved and :func:`check_data`, against splits already
    loaded (a search checks each listed value of its space so, without loading the data again)."""
    return _against_data(cfg, check_config(cfg)[0], splits)


def plan_run(cfg: C.RunConfig) -> Plan:
    """Check ``cfg`` (the cheap checks before loading any data), load and split the data, check the run
    against it, and return the plan every entry point starts from."""
    spec_or_name, ops = check_config(cfg)
    device = ddp.device_for(resolve_device(cfg.train.device), cfg.train.sync_bn)  # torchrun, GPUs: cuda:LOCAL_RANK
    set_hardware(cfg, device)
    ds, splits = prepare_data(cfg)
    cfg, spec = _against_data(cfg, spec_or_name, splits)
    check_run_memory(cfg, spec, splits.train.input_shape, len(splits.classes), len(splits.train) + len(splits.val),
                     device)
    steps = math.ceil(len(splits.train) / cfg.train.batch_size)
    return Plan(cfg, ds, splits, spec, ops, splits.train.input_shape, output_size(cfg, splits), steps, device,
                tuple(augment_warnings(list(ops), ds.name, cfg.data.preprocess, ds.traits)
                      + config_warnings(cfg, steps)))


def concrete_epochs(cfg: C.RunConfig) -> C.RunConfig:
    """``cfg`` with ``train.epochs=0`` (auto) made concrete for its data, which this loads: for a command that needs
    the number before any run exists (a search shares the epochs out between its stages)."""
    return cfg if cfg.train.epochs else replace(cfg, train=replace(cfg.train, epochs=plan_run(cfg).cfg.train.epochs))


def make_model(cfg: C.RunConfig, input_shape: tuple[int, int, int], num_classes: int,
               seed: int | None = None, batch: torch.Tensor | None = None, spec: Spec | None = None) -> nn.Module:
    """Build the spec for this input and initialise it (seeded); ``batch`` (preprocessed training
    images) is what the data-dependent init schemes (lsuv, data) measure."""
    seed_all(cfg.train.seed if seed is None else seed)  # torch, numpy and random: a resumed run matches
    model = build(spec if spec is not None else parse(resolve_spec(cfg.model.spec, input_shape)), input_shape,
                  num_classes)
    init_weights(model, cfg.model.init, batch=batch, bias=cfg.model.init_bias)
    return model


def fresh_start(plan: Plan, pre: Preprocessor | None = None) -> tuple[nn.Module, TensorData, Augment | None]:
    """The seeded, initialised model, the preprocessed train/val tensors on the plan's device (plus the raw
    training pixels when the run augments) and the augmentation, exactly as a new ``babysit train`` starts
    them. ``pre``: preprocessing statistics saved by a run (default: fitted on the training split now)."""
    cfg, splits, device = plan.cfg, plan.splits, plan.device
    pre = pre if pre is not None else Preprocessor.from_config(splits.train.x, cfg.data)
    init_batch = pre(splits.train.x[: cfg.model.init_batch]) if needs_data(cfg.model.init) else None
    shape = pre.output_shape(splits.train.input_shape)  # (k, 1, 1) after pca, (C k^2, H, W) after patch-white
    model = make_model(cfg, shape, plan.num_classes, batch=init_batch, spec=plan.spec).to(device)
    if splits.train.store is not None:  # streaming: the splits stay memory-mapped; batches are read and preprocessed
        data = TensorData(MappedImages(splits.train.x, device, pre), splits.train.y.to(device),  # as they are drawn
                          MappedImages(splits.val.x, device, pre), splits.val.y.to(device),
                          x_raw=MappedImages(splits.train.x, device) if plan.ops else None)
        return model, data, make_augment(cfg, plan.num_classes, splits.train.x, pre, list(plan.ops))
    x_raw = splits.train.x.to(device)
    try:
        nhwc = _nhwc if cfg.train.channels_last else (lambda x: x)  # stored like the weights: no copy per batch
        data = TensorData(nhwc(pre(x_raw)), labels(cfg, splits.train).to(device), nhwc(pre(splits.val.x.to(device))),
                          labels(cfg, splits.val).to(device), x_raw=x_raw if plan.ops else None)
    except (MemoryError, RuntimeError) as e:  # torch's allocator raises RuntimeError "can't allocate memory"
        if not isinstance(e, MemoryError) and "allocate" not in str(e):
            raise
        mb = (len(splits.train) + len(splits.val)) * math.prod(plan.input_shape) * 4 / 2**20
        raise BabysitError(f"the preprocessed train and val splits ({mb:,.0f} MB of float32) do not fit in memory; "
                           "use --data.stream=on (image folders and CSV lists) or --data.limit to train on fewer "
                           "images.") from None
    if cfg.transfer.source:
        model, data = _from_source(model, data, cfg)
    return model, data, make_augment(cfg, plan.num_classes, splits.train.x, pre, list(plan.ops))


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """Image batches (N, C, H, W) in channels-last memory (the same tensor when already so, e.g. one channel)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def preprocessed(pre: Preprocessor, images: ImageSet, device: torch.device) -> torch.Tensor | MappedImages:
    """A split as network inputs on ``device``: preprocessed whole, or (streaming) batch by batch as it is read."""
    if images.store is not None:
        return MappedImages(images.x, device, pre)
    return pre(images.x.to(device))


def output_size(cfg: C.RunConfig, splits: Splits) -> int:
    """The scores the network outputs: one per class, or with model.heads the classes of every task together
    (the first task's must be the data's classes)."""
    heads = parse_heads(cfg.model.heads)
    if not heads:
        return len(splits.classes)
    if heads[0][1] != len(splits.classes):
        name, k = heads[0][0], len(splits.classes)
        raise BabysitError(f"model.heads' first task {name!r} reads the labels y, which have {k} classes, not "
                           f"{heads[0][1]}; use {name}:{k}.")
    for part in (splits.train, splits.val, splits.test):
        label_matrix(part.y, part.tasks, heads)  # every task's column present and in range
    return sum(k for _, k in heads)


def labels(cfg: C.RunConfig, part: ImageSet) -> torch.Tensor:
    """The labels a split trains or is scored on: y (N,), or with model.heads one column per task (N, T)."""
    heads = parse_heads(cfg.model.heads)
    return label_matrix(part.y, part.tasks, heads) if heads else part.y


def source_weights(source: str) -> Path:
    """The weights a fine-tune run starts from: the source run's best (else last) checkpoint."""
    try:
        return RunDir.open(source).weights_file("best")
    except BabysitError as e:
        raise BabysitError(f"transfer.source={source!r} is not a usable run directory ({e}); fine-tune from a "
                           "finished `babysit train` run.") from None


def _from_source(model: nn.Module, data: TensorData, cfg: C.RunConfig) -> tuple[nn.Module, TensorData]:
    """A fine-tune run's start: the source run's weights below a new head (initialised as any run's), the first
    conv adapted to the images' channels. The linear probe freezes everything below the head and trains on the
    head's inputs, computed here once (the HeadOnly model keeps every module, so its checkpoints are the run's)."""
    path = source_weights(cfg.transfer.source)
    if not path.is_file():
        raise BabysitError(f"the source run {cfg.transfer.source} has no weights ({path} is missing); let it finish "
                           "or resume it first.")
    load_source(model, path, cfg.transfer.source)
    if cfg.transfer.strategy != "linear-probe":
        return model, data  # the Freezer callback freezes by epoch
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise BabysitError("transfer.strategy=linear-probe needs a network ending in an fc layer (its input is the "
                           "feature vector); use --transfer.strategy=top for this one.")
    apply_freezing(model, 1)
    bs = cfg.train.eval_batch_size
    feats = TensorData(probe_features(model, data.x_train, bs), data.y_train, probe_features(model, data.x_val, bs),
                       data.y_val)
    return HeadOnly.of(model), feats


def load_preprocessor(run: RunDir) -> Preprocessor:
    """The preprocessing statistics a run fitted on its training split (RUN/preprocess.safetensors)."""
    path = run.preprocess
    stats, meta = load_checkpoint(path)
    if meta.get("kind") not in KINDS or not {"mean", "std"} <= stats.keys():
        raise BabysitError(f"{path} does not hold preprocessing statistics; put back the run's own file.")
    return Preprocessor.from_state_dict(meta["kind"], stats)


def check_split(run: RunDir, splits: Splits) -> None:
    """The data must still split into the sizes the run was trained on."""
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    saved = run.read_json(run.meta).get("split_sizes")
    if saved is not None and saved != sizes:
        raise BabysitError(f"the data now splits into {sizes} train/val/test images but run {run.path} was trained "
                           f"on {saved}; the data set changed since, so its scores would not be comparable.")


def user_module(run: RunDir) -> str | None:
    """The import path of the user's own nn.Module a run was trained with (``babysit.train(cfg, model=...)``),
    from meta.json; None for a run built from its spec."""
    meta = run.read_json(run.meta) if run.meta.exists() else {}
    name = meta.get("module") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def module_needed(run: RunDir, name: str) -> BabysitError:
    """The sentence for a run of the user's own module opened without it (the CLI, or Python without model=)."""
    return BabysitError(f"{str(run.path)!r} was trained with your own nn.Module {name}, which babysit cannot "
                        "rebuild from the run directory (it never runs code from a run's files); use it from Python "
                        f"and pass a fresh instance, e.g. babysit.evaluate_run(RUN, model={name.split('.')[-1]}()) "
                        "or babysit.load_model(RUN, model=...), babysit.predict(RUN, images, model=...).")


def load_model(run: RunDir, cfg: C.RunConfig, pre: Preprocessor, input_shape: tuple[int, int, int], num_classes: int,
               weights: str = "best", model: nn.Module | None = None) -> nn.Module:
    """The run's network with one set of its weights (best, else last; or last, ema, swa, snapshot-N, epoch-N).
    ``model``: a fresh instance of the user's own module the run was trained with (its weights are loaded into
    it); needed for such a run, refused for one built from its spec."""
    weights_path = run.weights_file(weights)
    name = user_module(run)
    if name is not None and model is None:
        raise module_needed(run, name)
    if name is None and model is not None:
        raise BabysitError(f"{str(run.path)!r} was built from its spec ({cfg.model.spec!r}), not from your own "
                           "module; drop model= to rebuild it from the spec.")
    tensors, _ = load_checkpoint(weights_path)
    if model is None:
        model = build(parse(cfg.model.spec), pre.output_shape(input_shape), num_classes)
    try:
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as e:
        raise BabysitError(f"{weights_path} does not match the run's spec ({str(e).splitlines()[0]}).") from None
    return model


def load_run(path: str | Path, device: str = "cpu", weights: str = "best", model: nn.Module | None = None
             ) -> tuple[RunDir, C.RunConfig, nn.Module, Preprocessor, Splits]:
    """Set a run up again from its directory: its config, a set of its weights in the model (``weights``: best,
    else last; or last, ema, swa, snapshot-N, epoch-N), the preprocessing it fitted and the same splits (refused
    when the data no longer splits the same). ``model``: for a run of the user's own module, a fresh instance."""
    run = RunDir.open(path)
    cfg = C.load_toml(run.config)
    _, splits = prepare_data(cfg)
    check_split(run, splits)
    pre = load_preprocessor(run)
    if model is None:  # the user's own module is already allocated
        check_run_memory(cfg, parse(resolve_spec(cfg.model.spec, splits.train.input_shape)), splits.train.input_shape,
                         output_size(cfg, splits), 0, resolve_device(device, "--device"), training=False)
    model = load_model(run, cfg, pre, splits.train.input_shape, output_size(cfg, splits), weights, model)
    return run, cfg, model.to(resolve_device(device, "--device")), pre, splits
