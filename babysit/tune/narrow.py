"""Coarse to fine: narrow each range around where the best coarse trials turned up.

The notes: "first search in coarse ranges and then depending on where the best results are turning
up, narrow the range". For a numeric parameter the fine range spans the top-k values plus a margin on
each side, in log space for a log-searched one:

    u_i = log10(x_i) (or x_i)           the top-k trials' values
    pad = max(SPAN_PAD * (max u - min u), MIN_PAD * (U_high - U_low))
    fine = [max(U_low, min u - pad), min(U_high, max u + pad)]

and the fine range never leaves the coarse one (a best value on its border is a finding of the report:
widen the coarse range and search again). A whole-number range is rounded outwards; a list of values
keeps those the top-k trials used, in their original order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from babysit.tune.space import Param, Space

SPAN_PAD = 0.25
"""Margin on each side, as a share of the span of the top-k values ..."""
MIN_PAD = 0.1
"""... and at least this share of the coarse range (so one trial, or k equal values, still leave a range)."""


def narrow_param(p: Param, values: Sequence[Any]) -> Param:
    """``p``'s fine range around ``values`` (the top-k trials' values of it)."""
    if not values:
        return p
    if not p.numeric:
        used = {repr(v) for v in values}
        return Param(p.key, p.kind, choices=tuple(c for c in p.choices if repr(c) in used))
    to = math.log10 if p.log else float
    back = (lambda u: 10.0**u) if p.log else float
    lo, hi = to(p.low), to(p.high)  # type: ignore[arg-type]
    us = [to(v) for v in values]
    pad = max(SPAN_PAD * (max(us) - min(us)), MIN_PAD * (hi - lo))
    low, high = max(lo, min(us) - pad), min(hi, max(us) + pad)
    if p.kind == "int":
        return Param(p.key, p.kind, max(int(p.low), math.floor(low)), min(int(p.high), math.ceil(high)))  # type: ignore[arg-type]
    # the exact coarse bound where clipped (10**log10(x) can differ from x in the last bit)
    return Param(p.key, p.kind, p.low if low == lo else back(low), p.high if high == hi else back(high))


def narrow(space: Space, top: Sequence[Mapping[str, Any]]) -> Space:
    """The fine stage's space: every parameter narrowed around the ``top`` trials' params (best first)."""
    return tuple(narrow_param(p, [t[p.key] for t in top if p.key in t]) for p in space)
