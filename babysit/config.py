"""Run configuration: one frozen dataclass per stage, nested in :class:`RunConfig`.

These dataclasses are the single source of defaults. A TOML file and ``--section.key=value``
overrides fill them; an unknown section or key is a :class:`BabysitError` that names it and
suggests the nearest key.

Each field's trailing comment (continued on ``#`` lines right below it) is its ``--help`` text:
one line of meaning, and for a choice the allowed values written ``a | b | c``
(tests/test_cli.py checks them against the code's registries).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import tomli_w

from babysit.errors import BabysitError
from babysit.limits import read_small_text

DEFAULT_SPEC = "auto"  # a small BN net sized to the input (babysit/models/auto.py); "lecture" names the old default


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # data set: digits, mnist or fashion-mnist, a folder of images, or a .npz file
    val_fraction: float = 0.1  # share of the training images held out for validation
    test_fraction: float = 0.2  # share held out for test when the set has no official test split
    preprocess: str = "channel-mean-std"  # pixel preprocessing, fitted on the training split only:
    #   none | mean-image | channel-mean | channel-mean-std | pca | pca-white | zca | patch-white
    pca_components: int = 0  # pca, pca-white: keep the top k components (0: as many as pca_variance needs)
    pca_variance: float = 0.99  # pca, pca-white with pca_components=0: keep the fewest components holding this share
    whiten_eps: float = 1e-5  # pca-white, zca, patch-white: divide by sqrt(eigenvalue + eps) (pixels scaled to 0..1)
    patch_size: int = 2  # patch-white: whiten k x k patches with a fixed k x k conv (C*k*k output channels)
    channels: int = 0  # convert images to this many channels (1 or 3); 0 keeps the source's
    size: int = 0  # resize images to size x size pixels; 0 keeps the source's
    limit: int = 0  # use at most this many training images (0 = all; val and test are not capped)
    split_seed: int = -1  # seeds the train/val/test split (and data.limit's subset); -1 = train.seed
    # (ensemble members trained with different train.seed share one split through it)
    folds: int = 0  # K-fold cross-validation: val is fold data.fold of K folds of the non-test images; 0 = off
    # (data.val_fraction is used)
    fold: int = 0  # with data.folds=K: which fold (0 .. K-1) is the validation split
    stream: str = "auto"  # decode image folders and CSV lists once into a memory-mapped uint8 cache (data.cache) and
    # read batches from it, instead of holding them in memory (auto does when memory is short): auto | on | off
    cache: str = ""  # streaming: folder of the uint8 caches; "" = $XDG_CACHE_HOME/babysit/stream (~/.cache/...)
    workers: int = 2  # streaming: DataLoader worker processes that decode the images once; 0 = this process


@dataclass(frozen=True)
class AugmentConfig:
    pipeline: tuple[str, ...] = ()  # training-only augmentations in order, e.g. flip-h,translate-2,rotate-10,cutout-8
    fill: str = "constant"  # pixels a warp uncovers: constant | edge | reflect | symmetric | wrap
    fill_value: float = 0.0  # constant fill, in pixel units 0..255 (0 is black)


@dataclass(frozen=True)
class ModelConfig:
    spec: str = DEFAULT_SPEC  # architecture: auto (BN net sized to the input), lecture, a case study (README) or a spec
    init: str = "auto"  # weight init: auto (He for ReLU, Xavier for tanh/sigmoid) | he | xavier | normal-STD
    #   | orthogonal | lsuv | data
    init_bias: float = 0.0  # every conv/fc bias starts at this constant (0, or small like 0.01 so ReLUs fire)
    init_batch: int = 256  # training images that the lsuv and data init schemes measure
    heads: str = ""  # multi-task: one head per task on the shared trunk, NAME:CLASSES,... (e.g. class:10,group:4);
    # the first task reads the labels y, the others a .npz's y_NAME; "" = one task


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # update rule: sgd | adagrad | rmsprop | adam | almost-adam | adamw
    lr: float = 0.2  # learning rate per step, before the schedule (onecycle: its peak)
    momentum: float = 0.9  # sgd: mu in v = mu*v - lr*dx; 0 gives vanilla SGD
    nesterov: bool = True  # sgd: Nesterov momentum (look-ahead gradient); no effect with momentum 0
    betas: tuple[float, float] = (0.9, 0.999)  # adam, almost-adam, adamw: decay rates beta1, beta2 of m and v
    decay_rate: float = 0.99  # rmsprop: cache = decay_rate*cache + (1-decay_rate)*dx^2 (torch's alpha)
    eps: float = 1e-8  # adagrad, rmsprop, adam*: added to sqrt(cache) so the step never divides by zero
    weight_decay: float = 5e-4  # lambda of the L2 term lambda/2*||W||^2 added to the loss (adamw: decoupled)
    decoupled: bool = False  # apply weight_decay as w -= lr*lambda*w inside the step, not in the loss (adamw always)
    decay_bias: bool = False  # also apply the L2 term to biases and norm parameters
    clip_norm: float = 0.0  # clip the gradient's global L2 norm to this before each step; 0 = off
    layer_decay: float = 1.0  # discriminative learning rates: weight layer d below the top trains at lr*layer_decay^d
    # (1 = one lr for all; babysit finetune's full and top strategies default to 0.5)


READ_BY = {"momentum": ("sgd",), "nesterov": ("sgd",), "betas": ("adam", "almost-adam", "adamw"),
           "decay_rate": ("rmsprop",), "eps": ("adagrad", "rmsprop", "adam", "almost-adam", "adamw")}
"""Which update rules (optim.name) read which OptimConfig options; the rest are ignored by that rule."""


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "onecycle"  # learning-rate schedule:
    #   constant | step | exp | inv-time | inv-sqrt | linear | sqrt | cosine | cosine-restarts | cyclical | onecycle
    #   | plateau
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs, multiplying any schedule
    unit: str = "epoch"  # what t counts for step, exp, inv-time, inv-sqrt, cyclical: epoch (fractional) | step
    step_size: float = 20.0  # step: multiply lr by gamma every step_size units (20 epochs; or 50000 steps)
    gamma: float = 0.1  # step: decay factor (x0.1 every 20 epochs, x0.5 every 5, x0.97 every 1)
    k: float = 0.1  # exp: lr*e^(-k*t); inv-time: lr/(1+k*t); inv-sqrt: lr/sqrt(1+k*t), per unit
    min_lr: float = 0.0  # cyclical, onecycle: lower bound (optim.lr is the upper); 0 means optim.lr/25
    half_cycle: float = 2.0  # cyclical: units from the lower to the upper bound (the CLR paper's stepsize)
    pct_start: float = 0.3  # onecycle: share of the run spent rising to optim.lr
    momentum_low: float = 0.85  # onecycle: momentum (sgd) or beta1 (adam) falls from momentum_high to this while
    #   the lr rises and climbs back while it falls (Smith 2018; torch's cycle_momentum); 0 keeps optim's own fixed
    momentum_high: float = 0.95  # onecycle: the momentum (or beta1) at the start and the end of the cycle
    factor: float = 0.5  # plateau: multiply lr by this once the val loss has not improved for more than patience epochs
    patience: int = 2  # plateau: epochs without a better val loss tolerated before lr is multiplied by factor
    cycles: int = 1  # cosine-restarts: cosine cycles (SGDR); each ends at an epoch end with a snapshot of the weights


@dataclass(frozen=True)
class LossConfig:
    name: str = "softmax"  # data loss: softmax (cross-entropy) | svm | squared-hinge | attribute-hinge | bce
    delta: float = 1.0  # svm, squared-hinge: the margin Delta in max(0, s_j - s_y + Delta)
    label_smoothing: float = 0.0  # softmax: eps; targets become eps/(k-1) for wrong classes, 1-eps for the right one
    task_weights: str = ""  # multi-task: NAME=WEIGHT,... multiplying each task's loss in the sum (default 1 each)


@dataclass(frozen=True)
class RegularizeConfig:
    l1: float = 0.0  # lambda1 of lambda1*sum|W| added to the loss; with optim.weight_decay it is the elastic net
    max_norm: float = 0.0  # c: after every step each unit's incoming weights are scaled to ||w||_2 <= c; 0 = off
    layer_weight_decay: str = ""  # per-layer L2 strengths replacing optim.weight_decay: "LAYER=LAMBDA,..." ("0=1e-3")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 0  # passes over the training split; 0 = auto: enough for about 800 steps, in 2..30 epochs
    batch_size: int = 0  # examples per mini-batch; 0 = auto: n_train/400 rounded down to a power of 2, in 32..512
    seed: int = 0  # seeds the split, init, shuffling and dropout
    device: str = "auto"  # where to train: auto (cuda when available, else cpu), cpu, cuda or cuda:N
    progress: bool = True  # progress bar during an epoch (only when stdout is a terminal)
    train_eval_size: int = 1000  # training images scored after each epoch for "train" accuracy
    eval_batch_size: int = 1000  # examples per forward pass when evaluating
    sync_every: int = 50  # steps between reading the losses back from the device (checked, recorded); 1 = each step
    threads: int = 0  # CPU threads torch may use; 0 = $OMP_NUM_THREADS when set, else every core this process may use
    # (under torchrun: those cores divided by the processes on the machine)
    sync_bn: bool = False  # torchrun (DDP): batch norm statistics over the global batch (SyncBatchNorm, CUDA only);
    # off = each process normalises its own rows
    scale_lr: bool = False  # torchrun (DDP): linear scaling rule: batch_size is per process (global = batch_size x N)
    # and optim.lr is multiplied by N; off = batch_size is the global batch and lr is used as given
    channels_last: bool = True  # keep conv activations channels-last (NHWC): faster for BN nets on many CPUs/GPUs
    precision: str = "fp32"  # arithmetic of forward and loss: fp32 | bf16
    # (bf16 = autocast to bfloat16, CUDA only)
    compile: str = "off"  # torch.compile the model (opt-in; first steps compile): off | default | reduce-overhead
    # | max-autotune (reduce-overhead uses CUDA graphs)
    deterministic: bool = False  # deterministic kernels (cuDNN and others): bit-identical resume on CUDA, slower
    monitor: str = "val_acc"  # the score that picks the kept (best) weights and stops early: val_acc | val_loss
    patience: int = 0  # early stopping: stop after this many epochs without a better train.monitor; 0 = off
    min_delta: float = 0.0  # early stopping and best weights: a change smaller than this is no improvement
    ema: float = 0.0  # keep an exponential moving average of the weights with this decay (e.g. 0.999); 0 = off
    swa_epochs: int = 0  # stochastic weight averaging: average the weights of the last N epoch ends; 0 = off
    swa_lr: float = 0.0  # during the SWA epochs hold the learning rate at this value; 0 keeps the schedule
    score_test: bool = True  # score the test split when the run ends; false keeps the test images unseen
    # (babysit recipe scores them once, at its end, on the model it chose)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 500  # a checkpoint every N steps or at each epoch end, whichever first: a crash loses <= N steps
    keep_last: int = 0  # also keep the weights of the last N epoch ends (babysit ensemble --checkpoints); 0 = none


@dataclass(frozen=True)
class LRFindConfig:
    start_lr: float = 1e-7  # first learning rate of the range test's exponential ramp
    end_lr: float = 10.0  # last learning rate of the ramp
    steps: int = 150  # mini-batches in the ramp, one learning rate each (a fraction of an epoch on most data)
    seeds: int = 1  # repeats with different batch orders (train.seed, +1, ...); 3 shows the spread in the plot
    smoothing: float = 0.96  # beta of the loss's moving average (bias-corrected); lags ~1/(1-beta) mini-batches
    diverge: float = 4.0  # stop a repeat once the smoothed loss exceeds this many times its best


@dataclass(frozen=True)
class MonitorConfig:
    checks: bool = True  # sanity checks before training: initial loss, reg raises loss, overfit 20 images, zero inputs
    force: bool = False  # train even when a sanity check fails (otherwise `babysit train` stops with exit code 1)
    stats_every: int = 50  # steps between layer-statistics probes (each costs ~0.7 of a step); 0 = off
    tensorboard: bool = False  # also write TensorBoard events to RUN/events (tensorboard --logdir RUN/events)
    report: bool = True  # write RUN/report.html (self-contained) when the run ends


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = ""  # the ensemble (or run) whose soft targets train this model; set by `babysit distill`
    temperature: float = 4.0  # T: teacher and student probabilities are softmax(scores / T)
    alpha: float = 0.9  # weight of the soft-target term alpha*T^2*KL; the labels' cross-entropy gets 1 - alpha


@dataclass(frozen=True)
class BaselineConfig:
    distance: tuple[str, ...] = ("l1", "l2")  # knn: distances compared by cross-validation, comma-separated: l1 | l2
    k: tuple[int, ...] = (1, 3, 5, 7, 10, 20)  # knn: numbers of neighbours compared by cross-validation
    folds: int = 5  # knn: the K of K-fold cross-validation on the training split
    cv_size: int = 10000  # knn: training images the cross-validation uses (0 = all); the final vote uses all of them
    chunk_size: int = 500  # knn: test images per block of distances; memory ~ chunk_size x training images x 4 bytes
    features: str = "pixels"  # what knn and linear classify: pixels | color-hist | hog | bovw | pca
    loss: str = "svm"  # linear: the data loss, multiclass SVM or softmax: svm | softmax
    l2: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)  # linear: L2 strengths lambda tried; the best on val is kept
    hidden: int = 300  # two-layer: hidden units H of the net fc-H relu fc
    hist_bins: int = 16  # color-hist: hue bins (images with one channel: intensity bins)
    hog_orientations: int = 9  # hog: orientation bins per cell
    hog_cell: int = 0  # hog: cell side in pixels (0: the image side / 7, at least 2)
    bovw_words: int = 100  # bovw: visual words, the k-means clusters of local patches
    bovw_patch: int = 0  # bovw: side of the local patches in pixels (0: the image side / 4, at least 3)
    pca_components: int = 50  # pca: principal components kept (fitted on the training split)
    cache: bool = True  # keep computed features in the user cache (~/.cache/babysit/features), keyed by data + settings


@dataclass(frozen=True)
class SearchConfig:
    trials: int = 20  # trials of the first stage (coarse when there are two)
    fine_trials: int = 0  # trials of the fine stage after a coarse one; 0 = half of search.trials
    space: tuple[str, ...] = ()  # what to search, KEY=DIST each: loguniform(a,b), uniform(a,b), int(a,b),
    # choice('x','y'), grid(v1,v2,...), e.g. "optim.lr=loguniform(1e-4,1)"
    stages: tuple[str, ...] = ("coarse", "fine")  # coarse (few epochs, wide ranges) then fine (narrowed ranges,
    # the full epochs); or one of them alone
    coarse_epochs: float = 0.1  # coarse trials train this share of train.epochs (at least 1 epoch)
    coarse_data: float = 1.0  # coarse trials train on this share of the training images (1 = all)
    fine_data: float = 1.0  # fine trials train on this share of the training images (1 = all)
    top_k: int = 5  # the fine ranges are narrowed around the best k coarse trials
    sampler: str = "random"  # how trials are drawn: random | grid | tpe
    pruner: str = "none"  # stop weak trials early on their val accuracy per epoch: none | median | asha
    folds: int = 0  # K-fold cross-validation per trial (mean +- std of val accuracy), for small data sets; 0 = off
    workers: int = 1  # local worker processes sharing the study; the CPU cores are split between them
    storage: str = ""  # Optuna storage URL shared by workers (postgresql://...); empty = SQLite in the search folder
    name: str = ""  # search folder name under --out (default: DATA-DATE-TIME)


@dataclass(frozen=True)
class RecipeConfig:
    budget: str = "10m"  # wall-clock time for the whole recipe, e.g. 90s, 3m, 20m, 1h30m; split across its steps
    name: str = ""  # recipe folder name under --out (default: DATA-DATE-TIME)
    ensemble_top: int = 4  # fine-search trials offered to the ensemble beside the final model (kept if val gains)
    tta: bool = True  # try test-time augmentation on the chosen model (kept only if val accuracy gains)
    baselines: tuple[str, ...] = ("knn", "linear")  # classical baselines run for context, comma-separated:
    #   knn | linear | two-layer


STRATEGIES = ("linear-probe", "top", "full", "auto")
UNFREEZE = ("none", "gradual")


@dataclass(frozen=True)
class TransferConfig:
    source: str = ""  # the run whose weights start this one (set by `babysit finetune FROM_RUN`); "" = from scratch
    strategy: str = "full"  # what fine-tunes (auto measures the notes' 2x2 table): linear-probe | top | full | auto
    layers: int = 2  # top: the top K weight layers train, the new head counted as one
    unfreeze: str = "none"  # none | gradual (epoch 1 trains the head, each later epoch one more layer below)
    small: int = 1000  # auto: fewer labelled training images than this is "small" data


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    regularize: RegularizeConfig = field(default_factory=RegularizeConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)


SECTIONS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig))


def option_table() -> list[tuple[str, Any, str]]:
    """Every option as (dotted key, default, type name), in declaration order."""
    rows = []
    default = RunConfig()
    for sec in fields(RunConfig):
        section = getattr(default, sec.name)
        for f in fields(section):
            rows.append((f"{sec.name}.{f.name}", getattr(section, f.name), type(getattr(section, f.name)).__name__))
    return rows


def nearest(typed: str, known: Iterable[str]) -> str | None:
    """The entry of ``known`` closest to what the user typed, or None when none is close (difflib ratio).

    Entries may be dotted keys or options with their dashes. The part after the last dot weighs most,
    so ``epochs`` finds ``train.epochs``, ``optm.lr`` finds ``optim.lr`` and ``--confg`` ``--config``.
    """
    def parts(text: str) -> tuple[str, str]:
        section, _, name = text.lstrip("-").rpartition(".")
        return section, name

    t_sec, t_name = parts(typed)
    best, best_score = None, 0.6
    for entry in known:
        e_sec, e_name = parts(entry)
        score = (SequenceMatcher(None, t_name, e_name).ratio() + 0.1 * SequenceMatcher(None, t_sec, e_sec).ratio()
                 + 0.05 * e_name.startswith(t_name))  # "batch" means batch_size more likely than init_batch
        if score > best_score:  # strictly: on a tie the earlier (declaration-order) entry stays
            best, best_score = entry, score
    return best


def unknown_key_error(key: str, option: bool = False) -> BabysitError | None:
    """The error for a dotted key that names no config field (None when it names one).

    It names the unknown section or key, lists what exists there and suggests the nearest key,
    spelled as a command-line option (``--optim.lr``) when ``option``.
    """
    known = [k for k, _, _ in option_table()]
    if key in known:
        return None
    near = nearest(key, known)
    hint = f"; did you mean {'--' if option else ''}{near}?" if near else "."
    sec = key.partition(".")[0]
    if sec not in SECTIONS:
        return BabysitError(f"unknown config section {sec!r} in {key!r}; sections are: {', '.join(SECTIONS)}{hint}")
    keys = [k.partition(".")[2] for k in known if k.startswith(f"{sec}.")]
    return BabysitError(f"unknown config key {key!r}; keys in [{sec}] are: {', '.join(keys)}{hint}")


def is_list(key: str) -> bool:
    """Whether the dotted key holds a list of any length (``tuple[int, ...]``), not a fixed pair like betas."""
    sec, _, name = key.partition(".")
    section = next((f.type for f in fields(RunConfig) if f.name == sec), None)
    types = {f.name: str(f.type) for f in fields(globals()[section])} if isinstance(section, str) else {}
    return types.get(name, "").endswith(", ...]")


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` at ``sep`` outside brackets and quotes: ``"a=f(1,2),b"`` -> ``["a=f(1,2)", "b"]``
    (a list option such as search.space holds items with commas of their own)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _coerce(key: str, value: Any, like: Any) -> Any:
    """Convert ``value`` (a TOML value or a command-line string) to the type of the default ``like``."""
    kind = type(like)
    if kind is tuple and like and not isinstance(like[0], str) and is_list(key):  # numbers: "1,3,5" or [1, 3, 5]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items or (isinstance(value, str) and not value.strip()):
            raise BabysitError(f"{key} needs at least one number, got {value!r}; for example "
                               f"--{key}={','.join(str(v) for v in like[:3])}.")
        return tuple(_coerce(key, v, like[0]) for v in items)
    if kind is tuple and (not like or isinstance(like[0], str)):  # a list of words: "a,b" or ["a", "b"] in TOML
        items = [v.strip() for v in split_top_level(value)] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise BabysitError(f"{key} must be a list of names, got {value!r}; for example "
                               f"--{key}=flip-h,translate-2 or {key} = [\"flip-h\", \"translate-2\"] in TOML.")
        return tuple(v for v in items if v)
    if kind is tuple:  # a pair of floats (betas): "0.9,0.999" on the command line, [0.9, 0.999] in TOML
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or len(items) != len(like):
            raise BabysitError(f"{key} needs {len(like)} numbers, got {value!r}; for example "
                               f"--{key}={','.join(str(v) for v in like)}.")
        return tuple(_coerce(key, v, w) for v, w in zip(items, like))
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        try:
            if kind is bool:
                if text in ("true", "1", "yes", "on"):
                    return True
                if text in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            raise BabysitError(f"{key} must be a {kind.__name__}, got {value!r}; for example --{key}={like}.") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BabysitError(f"{key} must be a {kind.__name__}, got {value!r}; for example {key} = {like!r}.")
    return value


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return ``cfg`` with dotted keys (``"optim.lr"``) replaced; unknown keys are errors."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        error = unknown_key_error(key)
        if error is not None:
            raise error
        sec, _, name = key.partition(".")
        section = getattr(cfg, sec)
        changes.setdefault(sec, {})[name] = _coerce(key, value, getattr(section, name))
    new = {sec: replace(getattr(cfg, sec), **kv) for sec, kv in changes.items()}
    out = replace(cfg, **new)
    validate(out)
    return out


def _toolbox_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    """Ranges of the update rules, schedules, losses, regularisers and the LR range test."""
    o, s, f = cfg.optim, cfg.schedule, cfg.lr_find
    return [
        (all(0 <= b < 1 for b in o.betas), f"optim.betas must both be in [0, 1), got {o.betas}; try 0.9,0.999."),
        (0 <= o.decay_rate < 1, f"optim.decay_rate must be in [0, 1), got {o.decay_rate}; try 0.99."),
        (o.eps > 0, f"optim.eps must be > 0, got {o.eps}; try 1e-8."),
        (o.clip_norm >= 0, f"optim.clip_norm must be >= 0 (0 turns clipping off), got {o.clip_norm}."),
        (s.unit in ("epoch", "step"), f"schedule.unit must be epoch or step, got {s.unit!r}."),
        (s.step_size > 0, f"schedule.step_size must be > 0, got {s.step_size}."),
        (s.gamma > 0, f"schedule.gamma must be > 0, got {s.gamma}; e.g. 0.1 or 0.97."),
        (s.k >= 0, f"schedule.k must be >= 0, got {s.k}."),
        (0 <= s.min_lr < o.lr, f"schedule.min_lr must be in [0, optim.lr={o.lr}), got {s.min_lr}."),
        (s.half_cycle > 0, f"schedule.half_cycle must be > 0, got {s.half_cycle}."),
        (0 < s.pct_start < 1, f"schedule.pct_start must be between 0 and 1, got {s.pct_start}; try 0.3."),
        (0 <= s.momentum_low < 1, f"schedule.momentum_low must be in [0, 1), got {s.momentum_low}; try 0.85."),
        (s.momentum_low == 0 or s.momentum_low <= s.momentum_high < 1,
         f"schedule.momentum_high must be in [momentum_low, 1), got {s.momentum_high} with momentum_low "
         f"{s.momentum_low}; try 0.95."),
        (0 < s.factor < 1, f"schedule.factor must be between 0 and 1, got {s.factor}; try 0.5."),
        (s.patience >= 0, f"schedule.patience must be >= 0 epochs, got {s.patience}."),
        (cfg.loss.delta >= 0, f"loss.delta must be >= 0, got {cfg.loss.delta}; the notes use 1.0."),
        (0 <= cfg.loss.label_smoothing < 1, f"loss.label_smoothing must be in [0, 1), got {cfg.loss.label_smoothing}."),
        (cfg.regularize.l1 >= 0, f"regularize.l1 must be >= 0, got {cfg.regularize.l1}."),
        (cfg.regularize.max_norm >= 0, f"regularize.max_norm must be >= 0 (0 is off), got {cfg.regularize.max_norm}."),
        (cfg.model.init_batch > 0, f"model.init_batch must be at least 1, got {cfg.model.init_batch}."),
        (0 < f.start_lr < f.end_lr, f"lr_find.start_lr must be > 0 and below lr_find.end_lr, got {f.start_lr}."),
        (f.steps >= 10 and f.seeds >= 1, "lr_find.steps must be at least 10 and lr_find.seeds at least 1."),
        (0 <= f.smoothing < 1, f"lr_find.smoothing must be in [0, 1), got {f.smoothing}; try 0.98."),
        (f.diverge > 1, f"lr_find.diverge must be > 1, got {f.diverge}; try 4."),
    ]


FILL_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")
PRECISIONS = ("fp32", "bf16")
STREAM_MODES = ("auto", "on", "off")  # data.stream (babysit.data.stream reads the same three)
MONITORS = ("val_acc", "val_loss")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
SAMPLERS = ("random", "grid", "tpe")
PRUNERS = ("none", "median", "asha")
STAGES = ("coarse", "fine")


def _search_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    """Ranges of the hyper-parameter search and of K-fold validation (the space's text is checked by
    babysit.tune.space when a search starts)."""
    s, d = cfg.search, cfg.data
    return [
        (s.trials >= 1 and s.fine_trials >= 0, f"search.trials must be at least 1 and search.fine_trials >= 0, "
                                               f"got {s.trials} and {s.fine_trials}."),
        (s.sampler in SAMPLERS, f"search.sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}."),
        (s.pruner in PRUNERS, f"search.pruner must be one of {', '.join(PRUNERS)}, got {s.pruner!r}."),
        (len(s.stages) > 0 and all(st in STAGES for st in s.stages) and list(s.stages) in
         (["coarse"], ["fine"], ["coarse", "fine"]),
         f"search.stages must be coarse,fine or one of them, got {','.join(s.stages) or 'nothing'}."),
        (0 < s.coarse_epochs <= 1, f"search.coarse_epochs is a share of train.epochs in (0, 1], got {s.coarse_epochs}; "
                                   "try 0.1."),
        (0 < s.coarse_data <= 1 and 0 < s.fine_data <= 1, f"search.coarse_data and search.fine_data are shares of "
                                                          f"the training images in (0, 1], got {s.coarse_data} and "
                                                          f"{s.fine_data}; try 0.3."),
        (s.top_k >= 1, f"search.top_k must be at least 1, got {s.top_k}."),
        (s.folds == 0 or 2 <= s.folds <= 20, f"search.folds must be 0 (one validation split) or 2 .. 20, "
                                             f"got {s.folds}; try 5."),
        (1 <= s.workers <= 256, f"search.workers must be between 1 and 256, got {s.workers}."),
        (d.folds == 0 or 2 <= d.folds <= 20, f"data.folds must be 0 (off) or 2 .. 20, got {d.folds}."),
        (0 <= d.fold < max(d.folds, 1), f"data.fold must be in 0 .. data.folds-1 = {max(d.folds, 1) - 1}, "
                                        f"got {d.fold}."),
    ]


def _data_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    """Ranges of the preprocessing and augmentation options."""
    d, a = cfg.data, cfg.augment
    return [
        (d.pca_components >= 0, f"data.pca_components must be >= 0 (0: choose by data.pca_variance), "
                                f"got {d.pca_components}."),
        (0 < d.pca_variance <= 1, f"data.pca_variance must be in (0, 1], got {d.pca_variance}; try 0.99."),
        (d.whiten_eps > 0, f"data.whiten_eps must be > 0, got {d.whiten_eps}; the notes use 1e-5."),
        (1 <= d.patch_size <= 8, f"data.patch_size must be between 1 and 8 pixels, got {d.patch_size}; try 2."),
        (a.fill in FILL_MODES, f"augment.fill must be one of {', '.join(FILL_MODES)}, got {a.fill!r}."),
        (d.stream in STREAM_MODES, f"data.stream must be one of {', '.join(STREAM_MODES)}, got {d.stream!r}."),
        (d.workers >= 0, f"data.workers must be >= 0 (0: decode in this process), got {d.workers}."),
        (0 <= a.fill_value <= 255, f"augment.fill_value is a pixel value in 0..255, got {a.fill_value}."),
    ]


def _ensemble_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    """Ranges of early stopping, weight averaging, snapshots and distillation."""
    t, s, d = cfg.train, cfg.schedule, cfg.distill
    return [
        (-1 <= cfg.data.split_seed < 2**32, f"data.split_seed must be -1 (use train.seed) or in 0 .. 2**32-1, "
                                            f"got {cfg.data.split_seed}."),
        (t.monitor in MONITORS, f"train.monitor must be one of {', '.join(MONITORS)}, got {t.monitor!r}."),
        (t.patience >= 0, f"train.patience must be >= 0 epochs (0 turns early stopping off), got {t.patience}."),
        (t.min_delta >= 0, f"train.min_delta must be >= 0, got {t.min_delta}; e.g. 0.001."),
        (0 <= t.ema < 1, f"train.ema is a decay in [0, 1) (0 is off), got {t.ema}; try 0.999."),
        (0 <= t.swa_epochs and (t.epochs == 0 or t.swa_epochs <= t.epochs),
         f"train.swa_epochs must be between 0 (off) and train.epochs={t.epochs}, got {t.swa_epochs}."),
        (0 <= t.swa_lr < float("inf"), f"train.swa_lr must be >= 0 (0 keeps the schedule), got {t.swa_lr}."),
        (s.cycles >= 1, f"schedule.cycles must be at least 1, got {s.cycles}."),
        (s.name != "cosine-restarts" or s.cycles < 1 or t.epochs % s.cycles == 0,  # auto (0) picks a multiple
         f"schedule.cycles={s.cycles} must divide train.epochs={t.epochs}, so that every cycle ends at an epoch end "
         f"(where its snapshot is saved); e.g. --train.epochs={max(s.cycles, t.epochs // max(s.cycles, 1) * s.cycles)}"
         "."),
        (cfg.checkpoint.keep_last >= 0, f"checkpoint.keep_last must be >= 0 (0 keeps none), "
                                        f"got {cfg.checkpoint.keep_last}."),
        (0 < d.temperature < float("inf"), f"distill.temperature must be > 0, got {d.temperature}; Hinton et al. "
                                           "use 1 to 20, e.g. 4."),
        (0 <= d.alpha <= 1, f"distill.alpha must be in [0, 1], got {d.alpha}; e.g. 0.9."),
    ]


def _baseline_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    """Ranges of the classical baselines' options (their names are checked by babysit.baseline's registries)."""
    b = cfg.baseline
    return [
        (bool(b.distance), "baseline.distance needs at least one distance; try --baseline.distance=l1,l2."),
        (bool(b.k) and min(b.k) >= 1, f"baseline.k must be numbers of neighbours >= 1, got {b.k}; try 1,3,5,7."),
        (b.folds >= 2, f"baseline.folds must be at least 2 (K of K-fold cross-validation), got {b.folds}; try 5."),
        (b.cv_size >= 0, f"baseline.cv_size must be >= 0 (0: every training image), got {b.cv_size}."),
        (b.chunk_size >= 1, f"baseline.chunk_size must be at least 1 image, got {b.chunk_size}; try 500."),
        (bool(b.l2) and min(b.l2) >= 0, f"baseline.l2 must be strengths >= 0, got {b.l2}; try 0,1e-4,1e-3."),
        (b.hidden >= 1, f"baseline.hidden must be at least 1 unit, got {b.hidden}; LeCun's table uses 300."),
        (b.hist_bins >= 2, f"baseline.hist_bins must be at least 2, got {b.hist_bins}; try 16."),
        (b.hog_orientations >= 1, f"baseline.hog_orientations must be at least 1, got {b.hog_orientations}; try 9."),
        (b.hog_cell >= 0 and b.bovw_patch >= 0, "baseline.hog_cell and baseline.bovw_patch must be >= 0 (0: auto)."),
        (b.bovw_words >= 2, f"baseline.bovw_words must be at least 2, got {b.bovw_words}; try 100."),
        (b.pca_components >= 1, f"baseline.pca_components must be at least 1, got {b.pca_components}; try 50."),
    ]


def weight_pairs(text: str) -> list[tuple[str, str, float | None]]:
    """``"a=0.5, b=0"`` -> [(entry, name, weight)] for each comma-separated NAME=WEIGHT entry; weight is None
    when the entry has no "=", no name, or a value that is not a number >= 0 (the caller says what it wanted)."""
    out: list[tuple[str, str, float | None]] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = entry.partition("=")
        try:
            weight: float | None = float(value)
        except ValueError:
            weight = None
        ok = sep and name.strip() and weight is not None and weight >= 0  # NaN fails >= 0
        out.append((entry, name.strip(), weight if ok else None))
    return out


def parse_duration(text: str) -> float:
    """"90s", "3m", "1h30m", "20" (minutes) -> seconds; a BabysitError for anything else or a duration <= 0."""
    t = text.strip().lower().replace(" ", "")
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        seconds = float(t) * 60
    elif parts is not None and t:
        h, m, sec = (float(v) if v else 0.0 for v in parts.groups())
        seconds = h * 3600 + m * 60 + sec
    else:
        seconds = 0.0
    if seconds <= 0:
        raise BabysitError(f"recipe.budget must be a duration such as 90s, 3m, 20m or 1h30m (a bare number is "
                           f"minutes), got {text!r}.")
    return seconds


def _transfer_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    t = cfg.transfer
    return [
        (0 < cfg.optim.layer_decay <= 1, f"optim.layer_decay must be in (0, 1] (1: one learning rate for all layers), "
                                         f"got {cfg.optim.layer_decay}; try 0.5."),
        (t.strategy in STRATEGIES, f"transfer.strategy must be one of {', '.join(STRATEGIES)}, got {t.strategy!r}."),
        (t.unfreeze in UNFREEZE, f"transfer.unfreeze must be one of {', '.join(UNFREEZE)}, got {t.unfreeze!r}."),
        (t.layers >= 1, f"transfer.layers must be at least 1 (the new head), got {t.layers}; try 2."),
        (t.small >= 1, f"transfer.small must be at least 1 image, got {t.small}; try 1000."),
    ]


def _recipe_checks(cfg: RunConfig) -> list[tuple[bool, str]]:
    r = cfg.recipe
    parse_duration(r.budget)
    return [(r.ensemble_top >= 0, f"recipe.ensemble_top must be >= 0, got {r.ensemble_top}."),
            (all(b in ("knn", "linear", "two-layer") for b in r.baselines),
             f"recipe.baselines must name knn, linear or two-layer, got {','.join(r.baselines)!r}.")]


def _refuse_non_finite(cfg: RunConfig) -> None:
    """NaN or infinity in any float option passes every range check written as ``x >= 0`` (nan compares false
    both ways; inf is >= 0) and breaks training later, e.g. as a "learning rate too high" divergence."""
    for sec in fields(RunConfig):
        section = getattr(cfg, sec.name)
        for f in fields(section):
            v = getattr(section, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise BabysitError(f"{sec.name}.{f.name} must be a finite number, got {v}; set "
                                   f"--{sec.name}.{f.name} to a real value (see --help for its range).")


def validate(cfg: RunConfig) -> None:
    """Reject values no run can use, with the fix in the message."""
    checks = [
        (0 < cfg.optim.lr < float("inf"),
         f"optim.lr must be a positive number, got {cfg.optim.lr}; try --optim.lr=0.01."),
        (cfg.optim.momentum >= 0, f"optim.momentum must be >= 0, got {cfg.optim.momentum}."),
        (cfg.optim.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}."),
        (cfg.train.epochs >= 0, f"train.epochs must be at least 1 (or 0 for auto), got {cfg.train.epochs}."),
        (cfg.train.batch_size >= 0,
         f"train.batch_size must be at least 1 (or 0 for auto), got {cfg.train.batch_size}."),
        (cfg.train.eval_batch_size > 0, f"train.eval_batch_size must be at least 1, got {cfg.train.eval_batch_size}."),
        (cfg.train.sync_every > 0, f"train.sync_every must be at least 1 step, got {cfg.train.sync_every}."),
        (cfg.train.threads >= 0, f"train.threads must be >= 0 (0: automatic), got {cfg.train.threads}."),
        (cfg.train.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, "
                                            f"got {cfg.train.precision!r}."),
        (cfg.train.compile in COMPILE_MODES, f"train.compile must be one of {', '.join(COMPILE_MODES)}, "
                                             f"got {cfg.train.compile!r}."),
        (cfg.checkpoint.every > 0, f"checkpoint.every must be at least 1 step, got {cfg.checkpoint.every}."),
        (0 <= cfg.train.seed < 2**32, f"train.seed must be in 0 .. 2**32-1, got {cfg.train.seed}; try --train.seed=0."),
        (0 < cfg.data.val_fraction < 1, f"data.val_fraction must be between 0 and 1, got {cfg.data.val_fraction}."),
        (0 < cfg.data.test_fraction < 1, f"data.test_fraction must be between 0 and 1, got {cfg.data.test_fraction}."),
        (cfg.data.val_fraction + cfg.data.test_fraction < 1, "data.val_fraction + data.test_fraction must be below 1."),
        (cfg.data.channels in (0, 1, 3), f"data.channels must be 0 (keep), 1 or 3, got {cfg.data.channels}."),
        (cfg.data.size >= 0 and cfg.data.limit >= 0, "data.size and data.limit must be >= 0 (0 means keep all)."),
        (cfg.schedule.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {cfg.schedule.warmup_epochs}."),
        *_toolbox_checks(cfg),
        *_data_checks(cfg),
        *_ensemble_checks(cfg),
        *_baseline_checks(cfg),
        *_search_checks(cfg),
        *_recipe_checks(cfg),
        *_transfer_checks(cfg),
        (cfg.monitor.stats_every >= 0, f"monitor.stats_every must be >= 0 (0 turns the probes off), "
                                       f"got {cfg.monitor.stats_every}."),
    ]
    for ok, message in checks:
        if not ok:
            raise BabysitError(message)
    _refuse_non_finite(cfg)  # after the checks with ranges, whose messages say more


def to_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """The config as nested plain dicts, ready for TOML."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a config from nested dicts (a parsed TOML file) on top of ``base`` (defaults)."""
    flat: dict[str, Any] = {}
    for sec, values in data.items():
        if not isinstance(values, dict):
            raise BabysitError(f"config entry {sec!r} must be a [section] table; sections are: {', '.join(SECTIONS)}.")
        for key, value in values.items():
            flat[f"{sec}.{key}"] = value
    return apply_overrides(base or RunConfig(), flat)


def load_toml(path: str | Path) -> RunConfig:
    """Read a TOML config file; keys not set keep their defaults."""
    return from_dict(load_toml_dict(path))


def load_toml_dict(path: str | Path) -> dict[str, Any]:
    """A TOML config file's tables as nested dicts (not yet checked against the config's keys)."""
    p = Path(path)
    if not p.exists():
        raise BabysitError(f"config file {str(p)!r} does not exist; check the path given to --config.")
    try:
        data = tomllib.loads(read_small_text(p))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BabysitError(f"config file {str(p)!r} is not valid TOML ({e}); fix the line it names.") from None
    return data


def dumps_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML text (every key, defaults included)."""
    return tomli_w.dumps(to_dict(cfg))

