"""Run configuration: one frozen dataclass per stage, nested in :class:`RunConfig`.

These dataclasses are the single source of defaults. A TOML file and ``--section.key=value``
overrides fill them; an unknown section or key is a :class:`BabysitError` that names it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from babysit.errors import BabysitError

DEFAULT_SPEC = "[conv3-32 relu]*2 pool2 [conv3-64 relu]*2 pool2 fc-256 relu dropout-0.5 fc"


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # named set (digits, mnist, fashion-mnist), an image folder or a .npz
    val_fraction: float = 0.1  # share of the training images held out for validation
    test_fraction: float = 0.2  # share held out for test when the set has no official test split
    preprocess: str = "channel-mean-std"  # none | mean-image | channel-mean | channel-mean-std
    channels: int = 0  # convert images to this many channels (1 or 3); 0 keeps the source's
    size: int = 0  # resize images to size x size pixels; 0 keeps the source's
    limit: int = 0  # use at most this many training images (0 = all); for quick experiments


@dataclass(frozen=True)
class ModelConfig:
    spec: str = DEFAULT_SPEC  # architecture in the lecture's pattern; see README "Spec grammar"
    init: str = "auto"  # auto (He for ReLU family, Xavier for tanh/sigmoid) | he | xavier | normal-STD


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # update rule; sgd (with optional momentum / nesterov)
    lr: float = 0.05  # learning rate per step, before the schedule
    momentum: float = 0.9  # mu in v = mu*v - lr*dx; 0 gives vanilla SGD
    nesterov: bool = False  # Nesterov momentum (look-ahead gradient)
    weight_decay: float = 5e-4  # lambda of the L2 term lambda/2*||W||^2 added to the loss
    decay_bias: bool = False  # also apply the L2 term to biases and norm parameters


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "cosine"  # constant | step | cosine
    warmup_epochs: float = 1.0  # linear warm-up from 0 to lr over this many epochs
    step_epochs: int = 20  # step: multiply lr by gamma every this many epochs
    gamma: float = 0.1  # step: decay factor


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15  # passes over the training split
    batch_size: int = 64  # examples per mini-batch
    seed: int = 0  # seeds the split, init, shuffling and dropout
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:1 ...
    progress: bool = True  # progress bar during an epoch (only when stdout is a terminal)
    train_eval_size: int = 1000  # training images scored after each epoch for "train" accuracy
    eval_batch_size: int = 1000  # examples per forward pass when evaluating


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 500  # steps between checkpoints; one is also written at every epoch end


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


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


def _coerce(key: str, value: Any, like: Any) -> Any:
    """Convert ``value`` (a TOML value or a command-line string) to the type of the default ``like``."""
    kind = type(like)
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
        sec, _, name = key.partition(".")
        if sec not in SECTIONS:
            raise BabysitError(f"unknown config section {sec!r} in {key!r}; sections are: {', '.join(SECTIONS)}.")
        section = getattr(cfg, sec)
        known = [f.name for f in fields(section)]
        if name not in known:
            raise BabysitError(f"unknown config key {key!r}; keys in [{sec}] are: {', '.join(known)}.")
        changes.setdefault(sec, {})[name] = _coerce(key, value, getattr(section, name))
    new = {sec: replace(getattr(cfg, sec), **kv) for sec, kv in changes.items()}
    out = replace(cfg, **new)
    validate(out)
    return out


def validate(cfg: RunConfig) -> None:
    """Reject values no run can use, with the fix in the message."""
    checks = [
        (0 < cfg.optim.lr < float("inf"),
         f"optim.lr must be a positive number, got {cfg.optim.lr}; try --optim.lr=0.01."),
        (cfg.optim.momentum >= 0, f"optim.momentum must be >= 0, got {cfg.optim.momentum}."),
        (cfg.optim.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}."),
        (cfg.train.epochs > 0, f"train.epochs must be at least 1, got {cfg.train.epochs}."),
        (cfg.train.batch_size > 0, f"train.batch_size must be at least 1, got {cfg.train.batch_size}."),
        (cfg.train.eval_batch_size > 0, f"train.eval_batch_size must be at least 1, got {cfg.train.eval_batch_size}."),
        (cfg.checkpoint.every > 0, f"checkpoint.every must be at least 1 step, got {cfg.checkpoint.every}."),
        (0 < cfg.data.val_fraction < 1, f"data.val_fraction must be between 0 and 1, got {cfg.data.val_fraction}."),
        (0 < cfg.data.test_fraction < 1, f"data.test_fraction must be between 0 and 1, got {cfg.data.test_fraction}."),
        (cfg.data.val_fraction + cfg.data.test_fraction < 1, "data.val_fraction + data.test_fraction must be below 1."),
        (cfg.data.channels in (0, 1, 3), f"data.channels must be 0 (keep), 1 or 3, got {cfg.data.channels}."),
        (cfg.data.size >= 0 and cfg.data.limit >= 0, "data.size and data.limit must be >= 0 (0 means keep all)."),
        (cfg.schedule.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {cfg.schedule.warmup_epochs}."),
        (cfg.schedule.step_epochs > 0, f"schedule.step_epochs must be at least 1, got {cfg.schedule.step_epochs}."),
    ]
    for ok, message in checks:
        if not ok:
            raise BabysitError(message)


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
    p = Path(path)
    if not p.is_file():
        raise BabysitError(f"config file {str(p)!r} does not exist; check the path given to --config.")
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BabysitError(f"config file {str(p)!r} is not valid TOML ({e}); fix the line it names.") from None
    return from_dict(data)


def dumps_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML text (every key, defaults included)."""
    return tomli_w.dumps(to_dict(cfg))

