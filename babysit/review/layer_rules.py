"""Diagnosis rules over the layer statistics (the probes' records): update/weight ratio per layer, dead
ReLUs, saturated tanh/sigmoid units, vanishing or exploding gradients across depth.

Same contract as the rules in :mod:`babysit.review.diagnose`, which runs them; thresholds below.
"""

from __future__ import annotations

from typing import Any

from babysit.models.spec import layer_labels
from babysit.review.findings import Evidence, Finding, median

MIN_PROBES = 3
"""Layer-statistics rules need at least this many probe records."""
UPDATE_RATIO_LOW = 1e-4
"""Median update/weight ratio of a layer below this: its learning rate is too low (target ~1e-3)."""
UPDATE_RATIO_HIGH = 1e-2
"""Median update/weight ratio of a layer above this: its learning rate is too high."""
DEAD_RELU_MAX = 0.4
"""More than 40% of a ReLU layer's units never positive over a probed batch: dead ReLUs."""
SATURATION_MAX = 0.25
"""More than a quarter of a tanh/sigmoid layer's outputs beyond |0.99|: saturated units."""
VANISHING_RATIO = 1e-2
"""First weighted layer's relative gradient ||dW||/||W|| below 1/100 of the last hidden one's: vanishing.
The score layer is left out: its weights start tiny (``init.SCORE_LAYER_GAIN``), which inflates its
relative gradient and would make every net look vanishing at the start."""
EXPLODING_RATIO = 1e2
"""... above 100 times the last one's: exploding gradients."""


def _layer(ev: Evidence, name: str) -> str:
    """How a finding names a layer: "layer 3 conv3-64" when the run's spec says what it is, else "layer 3"."""
    spec = ev.config.get("model", {}).get("spec", "")
    label = layer_labels(spec).get(name) if isinstance(spec, str) and spec else None
    return f"layer {label}" if label else f"layer {name}"


def _per_layer(records: list[dict[str, Any]], stat: str, kinds: tuple[str, ...]) -> dict[str, float]:
    """Median of ``stat`` per layer of the given kinds over ``records``, in layer order."""
    values: dict[str, list[float]] = {}
    for r in records:
        for name, s in r.get("layers", {}).items():
            if s.get("kind") in kinds and isinstance(s.get(stat), (int, float)):
                values.setdefault(name, []).append(float(s[stat]))
    return {n: median(v) for n, v in values.items()}


def _feeds_batch_norm(records: list[dict[str, Any]]) -> set[str]:
    """Weighted layers whose output goes straight into a batch norm (the layers of a record are in spec order)."""
    order = [(n, s.get("kind")) for n, s in records[0].get("layers", {}).items()] if records else []
    return {n for (n, _), (_, nxt) in zip(order, order[1:]) if nxt == "bn"}


def _loss_fell_well(ev: Evidence) -> bool:
    """The per-step loss ended below half its start (means of the first and last tenth of the steps)."""
    losses = ev.losses()
    if len(losses) < 20:
        return False
    k = len(losses) // 10
    return sum(losses[-k:]) / k < 0.5 * sum(losses[:k]) / k


def update_ratio(ev: Evidence, found: set[str]) -> list[Finding]:
    """Per-layer update/weight ratio outside UPDATE_RATIO_LOW..UPDATE_RATIO_HIGH (median, full-LR probes).

    The notes' band (~1e-3) is a rule of thumb for plain nets. A layer that feeds a batch norm is left out of
    the "too high" side: BN undoes the scale of its weights, so their size (and the ratio) drifts without
    harm, and one-cycle's peak lr runs such nets at 1e-2 on purpose. When the loss fell well all the same,
    a high ratio elsewhere is reported as information, not as a warning."""
    records = ev.full_lr_layers()
    if "lr_too_high" in found or len(records) < MIN_PROBES:
        return []
    ratios = _per_layer(records, "update_ratio", ("conv", "fc"))
    bn_fed = _feeds_batch_norm(records)
    out = []
    lr = ev.lr()
    for side, bad in (("low", {n: r for n, r in ratios.items() if r < UPDATE_RATIO_LOW}),
                      ("high", {n: r for n, r in ratios.items() if r > UPDATE_RATIO_HIGH and n not in bn_fed})):
        if not bad:
            continue
        listed = ", ".join(f"{_layer(ev, n)}: {r:.1e}" for n, r in bad.items())
        every = len(bad) == len(ratios)
        factor = 1e-3 / median(list(bad.values()))
        if every:
            action = (f"{'raise' if side == 'low' else 'lower'} the learning rate about "
                      f"{max(factor, 1 / factor):.2g}x (--optim.lr={lr * factor:.2g})")
        else:
            action = ("only these layers are off: check their initialisation, or give them their own learning rate "
                      "(parameter groups)")
        healthy = side == "high" and _loss_fell_well(ev)
        if healthy:
            action = ("nothing to change while the loss keeps falling and val accuracy rises; if the loss turns noisy "
                      "or val stalls, " + action)
        out.append(Finding(f"update_ratio_{side}", "info" if healthy else "warning",
                           f"update/weight ratio too {side} — LR too {side} for "
                           f"{'every layer' if every else 'some layers'}",
                           f"median ||dW||/||W|| per step {listed} (want ~1e-3, between {UPDATE_RATIO_LOW:g} and "
                           f"{UPDATE_RATIO_HIGH:g})", f"the learning rate is too {side} for "
                           f"{'the network' if every else 'these layers'}", action, {"ratios": bad}))
    return out


def _tail(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records[-max(1, len(records) // 3):]


def dead_relu(ev: Evidence, found: set[str]) -> list[Finding]:
    """Many ReLU units never positive over a probed batch (last third of the probes)."""
    if "lr_too_high" in found:  # a consequence of the explosion, not a cause of its own
        return []
    dead = {n: d for n, d in _per_layer(_tail(ev.layers), "dead", ("relu",)).items() if d > DEAD_RELU_MAX}
    if not dead:
        return []
    listed = ", ".join(f"{_layer(ev, n)}: {d:.0%}" for n, d in dead.items())
    return [Finding("dead_relu", "warning", "dead ReLUs",
                    f"units never positive over a whole batch: {listed} (threshold {DEAD_RELU_MAX:.0%})",
                    "a too-high learning rate knocked units into the flat side for good, or a bad initialisation",
                    "lower the learning rate, use He init, a small positive bias (--model.init_bias=0.01) "
                    "or leaky ReLU (lrelu)", {"dead": dead})]


def saturation(ev: Evidence, found: set[str]) -> list[Finding]:
    """tanh/sigmoid outputs stuck near +-1 (or 0/1)."""
    if "lr_too_high" in found:  # a consequence of the explosion, not a cause of its own
        return []
    fractions = _per_layer(_tail(ev.layers), "saturated", ("tanh", "sigmoid"))
    sat = {n: s for n, s in fractions.items() if s > SATURATION_MAX}
    if not sat:
        return []
    listed = ", ".join(f"{_layer(ev, n)}: {s:.0%}" for n, s in sat.items())
    return [Finding("saturation", "warning", "saturated tanh/sigmoid units",
                    f"outputs beyond |{0.99}|: {listed} (threshold {SATURATION_MAX:.0%})",
                    "the pre-activations are too large (weights initialised too big, or the learning rate too high), "
                    "so these units pass almost no gradient", "use Xavier init (--model.init=xavier), batch norm "
                    "before the activation, a lower learning rate, or ReLU", {"saturated": sat})]


def gradients_across_depth(ev: Evidence, found: set[str]) -> list[Finding]:
    """Relative gradient ||dW||/||W|| of the first weighted layer vs the last hidden one (median over probes)."""
    if "lr_too_high" in found:  # a consequence of the explosion, not a cause of its own
        return []
    ratios = []
    first_last: tuple[str, str] = ("", "")
    for r in ev.layers[len(ev.layers) // 2:] or ev.layers:
        rel = [(n, s["grad_norm"] / s["w_norm"]) for n, s in r.get("layers", {}).items()
               if s.get("kind") in ("conv", "fc") and s.get("grad_norm") is not None and s.get("w_norm")]
        rel = rel[:-1]  # without the score layer
        if len(rel) >= 2 and rel[-1][1] > 0:
            ratios.append(rel[0][1] / rel[-1][1])
            first_last = (rel[0][0], rel[-1][0])
    if not ratios:
        return []
    q = median(ratios)
    first, last = first_last
    numbers = {"ratio": q, "first": first, "last": last}
    if q < VANISHING_RATIO:
        return [Finding("vanishing_gradients", "warning", "vanishing gradients across depth",
                        f"{_layer(ev, first)}'s relative gradient ||dW||/||W|| is {q:.1e} times {_layer(ev, last)}'s",
                        "the gradient shrinks on its way back (saturating activations, too-small init, too deep a "
                        "plain stack)", "He/Xavier init, ReLU instead of sigmoid/tanh, batch norm (bn)", numbers)]
    if q > EXPLODING_RATIO:
        return [Finding("exploding_gradients", "warning", "exploding gradients across depth",
                        f"{_layer(ev, first)}'s relative gradient ||dW||/||W|| is {q:.1e} times {_layer(ev, last)}'s",
                        "the gradient grows on its way back (too-large init)",
                        "smaller init (He/Xavier), batch norm, or gradient clipping (--optim.clip_norm=1)", numbers)]
    return []
