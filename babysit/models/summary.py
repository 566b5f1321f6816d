"""Per-layer volume, activation memory, weights and FLOPs: the notes' VGGNet table for any spec.

Counting follows the notes' table: the activations are the INPUT volume and the output volume of
every conv, pool and fc layer; activation functions, dropout and batch norm are treated as in
place and add nothing (their rows, for bn and maxout, show ``-``). Weights exclude the conv/fc
biases, params include them (and batch norm's gamma and beta). FLOPs are 2 * multiply-adds of the
conv and fc layers; pooling, activations and batch norm are not counted.

A ``res[...]`` or ``cat[...]`` group gets a row of its own (its output volume: the sum, or the stacked
depth, is a new volume and counts) followed by its insides, indented: a residual body, then the shortcut
projection when there is one (``shortcut conv1-128-s2``, its weights counted like any conv's); a cat's
branches in order, each after the first starting with ``|``. The group row's own weights are 0, so the
totals count every weight once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from babysit.errors import BabysitError
from babysit.limits import human_bytes
from babysit.models.auto import parse_spec, resolve_spec
from babysit.models.shapes import LayerInfo, infer_shapes, volume_str
from babysit.models.spec import (
    FC,
    BatchNorm,
    Branch,
    Conv,
    GlobalAvgPool,
    Maxout,
    Pool,
    Residual,
    Shape,
    Spec,
)

BYTES_PER_NUMBER = 4  # float32


def human(n: float, digits: int = 2) -> str:
    """``n`` to ``digits`` significant figures with K/M/G/T (powers of 1000): 3211264 -> 3.2M."""
    if abs(n) < 1000 and float(n).is_integer():
        return str(int(n))  # small counts exactly: 588, not 590

    def rounded(e: int) -> float:
        x = n / 1000.0**e
        return round(x, digits - 1 - math.floor(math.log10(abs(x))))

    e = min(int(math.log10(abs(n)) // 3), 4) if abs(n) >= 1 else 0
    x = rounded(e)
    if abs(x) >= 1000 and e < 4:  # rounding crossed into the next unit: 999.7K -> 1M
        e += 1
        x = rounded(e)
    return f"{x:g}{['', 'K', 'M', 'G', 'T'][e]}"


@dataclass(frozen=True)
class Row:
    """One line of the table: the INPUT or one layer."""

    index: int | None  # flat layer index (module name in the built model); None for INPUT
    token: str  # "INPUT" or the layer's token, e.g. "conv3-64"
    shape: Shape  # output volume (C, H, W) or (N,)
    activations: int  # numbers in the output volume per image, 0 where the notes count none
    memory_formula: str  # "224*224*64=3.2M"
    memory_bytes: int  # activations * 4 bytes * batch_size
    weights: int  # learned numbers without the conv/fc biases
    weights_formula: str  # "(3*3*3)*64 = 1,728"
    params: int  # weights + biases
    flops: int  # 2 * multiply-adds for the whole batch
    path: str = ""  # module path in the built model ("5.body.2"); "" for INPUT
    level: int = 0  # 0 for the network's own layers, 1 inside a res/cat group, 2 inside a group in a group, ...

    @property
    def volume(self) -> str:
        """H x W x D as in the notes, e.g. 224x224x64."""
        return volume_str(self.shape)


@dataclass(frozen=True)
class Summary:
    """The table for one spec, input shape and batch size, with its totals."""

    spec: str
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    rows: tuple[Row, ...]

    @property
    def scores_note(self) -> str:
        """"" when the network ends in one score per class; else the sentence ``train`` would refuse it with."""
        last = self.rows[-1]
        shape = tuple(int(v) for v in last.volume.split("x")) if "x" in last.volume else (int(last.volume),)
        if math.prod(shape) == self.num_classes and (len(shape) == 1 or shape[:2] == (1, 1)):
            return ""
        return (f"note: the network ends with volume {last.volume} but there are {self.num_classes} classes, so "
                "`babysit train` would refuse it; end the spec with a plain 'fc' (one output per class)")

    @property
    def total_activations(self) -> int:
        """Numbers in all counted volumes, per image (the notes' "TOTAL memory" before * 4 bytes)."""
        return sum(r.activations for r in self.rows)

    @property
    def total_memory_bytes(self) -> int:
        """Forward activation memory of the batch in bytes (about twice that with the backward pass)."""
        return sum(r.memory_bytes for r in self.rows)

    @property
    def total_weights(self) -> int:
        return sum(r.weights for r in self.rows)

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_flops(self) -> int:
        """2 * multiply-adds of the conv and fc layers for the whole batch."""
        return sum(r.flops for r in self.rows)


def _memory_formula(shape: Shape) -> str:
    if len(shape) == 1:
        return str(shape[0])
    c, h, w = shape
    return f"{h}*{w}*{c}={human(c * h * w)}"


def _weights(info: LayerInfo) -> tuple[int, str, int, int]:
    """(weights, formula, params, multiply-adds per image) of one layer."""
    layer, shape, out = info.layer, info.in_shape, info.out_shape
    if isinstance(layer, Conv):
        c_in = str(shape[0]) if layer.groups == 1 else f"{shape[0]}/{layer.groups}"
        weights = layer.f * layer.f * shape[0] // layer.groups * layer.k
        formula = f"({layer.f}*{layer.f}*{c_in})*{layer.k} = {weights:,}"
        return weights, formula, weights + layer.k, weights * out[1] * out[2]
    if isinstance(layer, FC):
        n_in = math.prod(shape)
        if len(shape) == 3 and shape[1:] != (1, 1):
            text_in = f"{shape[1]}*{shape[2]}*{shape[0]}"
        else:
            text_in = str(shape[0])
        weights = n_in * out[0]
        return weights, f"{text_in}*{out[0]} = {weights:,}", weights + out[0], weights
    if isinstance(layer, BatchNorm):  # gamma and beta: parameters, but a scale and shift, not weights
        return 0, f"0 (gamma, beta: 2*{shape[0]} = {2 * shape[0]:,} params)", 2 * shape[0], 0
    return 0, "0", 0, 0


def _rows(infos: list[LayerInfo] | tuple[LayerInfo, ...], batch_size: int, level: int) -> list[Row]:
    rows: list[Row] = []
    for info in infos:
        layer = info.layer
        if isinstance(layer, Residual | Branch):
            inner = _rows(info.inner, batch_size, level + 1)
            acts = math.prod(info.out_shape)  # the sum / the stacked volume is a new volume
            below = sum(r.weights for r in inner)
            rows.append(Row(info.index, "res[...]" if isinstance(layer, Residual) else "cat[...]", info.out_shape,
                            acts, _memory_formula(info.out_shape), acts * BYTES_PER_NUMBER * batch_size, 0,
                            f"0 (its layers below: {below:,})", 0, 0, info.name, level))
            rows += inner
            continue
        counted = isinstance(layer, Conv | Pool | GlobalAvgPool | FC | Maxout)  # a new (smaller) volume
        if not (counted or isinstance(layer, BatchNorm)):
            continue  # activations and dropout: in place, no weights, not in the notes' table
        acts = math.prod(info.out_shape) if counted else 0
        weights, formula, params, macs = _weights(info)
        token = info.token
        parts = info.name.split(".")
        if len(parts) >= 3 and parts[-2] == "shortcut":
            token = f"shortcut {token}"
        elif len(parts) >= 3 and parts[-2].isdigit() and parts[-2] != "0" and parts[-1] == "0":
            token = f"| {token}"  # the first layer of a cat's second, third, ... branch
        rows.append(Row(info.index, token, info.out_shape, acts,
                        _memory_formula(info.out_shape) if counted else "-", acts * BYTES_PER_NUMBER * batch_size,
                        weights, formula, params, 2 * macs * batch_size, info.name, level))
    return rows


def summary(spec: Spec | str, input_shape: tuple[int, int, int], num_classes: int, batch_size: int = 1) -> Summary:
    """Tabulate ``spec`` the way the notes tabulate VGGNet (see the module docstring for what counts).

    Unlike :func:`build`, any prefix of a network can be tabulated: the spec need not end in one
    score per class (``num_classes`` only sizes a plain ``fc``). ``spec`` may be a name (``vgg16``).
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise BabysitError(f"the batch size must be a whole number >= 1, not {batch_size!r}")
    spec = parse_spec(resolve_spec(spec, input_shape)) if isinstance(spec, str) else spec
    infos = infer_shapes(spec, input_shape, num_classes, require_scores=False)
    n_in = math.prod(input_shape)
    rows = [Row(None, "INPUT", tuple(input_shape), n_in, _memory_formula(tuple(input_shape)),
                n_in * BYTES_PER_NUMBER * batch_size, 0, "0", 0, 0)]
    rows += _rows(infos, batch_size, 0)
    c, h, w = input_shape
    return Summary(str(spec), (c, h, w), num_classes, batch_size, tuple(rows))


PARAM_COPIES = 5
"""Copies of the parameters a training run holds: the weights, their gradients, two optimiser moments (Adam;
SGD momentum holds one) and the best-val weights kept aside."""

SAVED_PER_ACTIVATION = 3
"""Numbers kept for the backward pass per counted activation: the table counts conv / pool / fc outputs only, and
each is followed by batch norm and a ReLU whose outputs autograd keeps too."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a network needs, from the table (before anything is allocated): its parameters with the copies
    training keeps, and the activations of one training mini-batch kept for backprop (or one forward pass)."""

    params_bytes: int
    activation_bytes: int
    training: bool = True

    @property
    def total(self) -> int:
        return self.params_bytes + self.activation_bytes

    def describe(self) -> str:
        return (f"{human_bytes(self.params_bytes)} for the parameters{' and their copies' * self.training}, "
                f"{human_bytes(self.activation_bytes)} "
                "for the activations of one mini-batch")


def memory_estimate(s: Summary, training: bool = True) -> MemoryEstimate:
    """What ``s`` (tabulated at the mini-batch size) needs: training keeps :data:`PARAM_COPIES` of the parameters
    and :data:`SAVED_PER_ACTIVATION` numbers per counted activation for the backward pass; a forward pass alone
    (evaluation, ``init-check``) keeps the parameters once and about two volumes at a time, bounded by all of them."""
    acts = s.total_memory_bytes
    if training:
        return MemoryEstimate(PARAM_COPIES * s.total_params * BYTES_PER_NUMBER, SAVED_PER_ACTIVATION * acts)
    return MemoryEstimate(s.total_params * BYTES_PER_NUMBER, min(acts, 2 * max(r.memory_bytes for r in s.rows)), False)


def _bytes(n: float) -> str:
    return human(n, 2) + "B"


def format_summary(s: Summary) -> str:
    """The table as text, one row per line, then the TOTAL lines in the notes' words."""
    cells = [(f"{'  ' * r.level}{r.token}:", f"[{r.volume}]", f"memory: {r.memory_formula}",
              f"weights: {r.weights_formula}", f"FLOPs: {human(r.flops) if r.flops else 0}") for r in s.rows]
    widths = [max(len(c[j]) for c in cells) for j in range(4)]
    lines = ["  ".join(c[j].ljust(widths[j]) for j in range(4)) + "  " + c[4] for c in cells]
    per_image = s.total_activations * BYTES_PER_NUMBER
    batch = "" if s.batch_size == 1 else f", {_bytes(s.total_memory_bytes)} / batch of {s.batch_size}"
    biases = s.total_params - s.total_weights
    lines += [
        "",
        f"TOTAL memory: {human(s.total_activations, 3)} * {BYTES_PER_NUMBER} bytes ~= {_bytes(per_image)} / image"
        f"{batch} (only forward! ~*2 for bwd)",
        f"TOTAL params: {human(s.total_params, 3)} parameters ({s.total_weights:,} weights + {biases:,} biases "
        f"and BN scales/shifts = {s.total_params:,}; {_bytes(s.total_params * BYTES_PER_NUMBER)} as float32)",
        f"TOTAL FLOPs: {human(s.total_flops / s.batch_size, 3)} / image (2 * multiply-adds of conv and fc layers)",
    ]
    if s.scores_note:
        lines.append(s.scores_note)
    return "\n".join(line.rstrip() for line in lines)
