"""Models: the architecture grammar, building, initialisation and the per-layer summary table."""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.models.build import MaxoutUnit, build, layer_module
    from babysit.models.init import SCHEMES, init_weights
    from babysit.models.shapes import LayerInfo, infer_shapes, volume_str
    from babysit.models.spec import (
        FC,
        Activation,
        BatchNorm,
        Conv,
        Dropout,
        GlobalAvgPool,
        Layer,
        LeakyReLU,
        Maxout,
        Pool,
        Repeat,
        Shape,
        Spec,
        parse,
        parse_token,
    )
    from babysit.models.summary import Row, Summary, format_summary, summary

__all__ = [
    "FC",
    "SCHEMES",
    "Activation",
    "BatchNorm",
    "Conv",
    "Dropout",
    "GlobalAvgPool",
    "Layer",
    "LayerInfo",
    "LeakyReLU",
    "Maxout",
    "MaxoutUnit",
    "Pool",
    "Repeat",
    "Row",
    "Shape",
    "Spec",
    "Summary",
    "build",
    "format_summary",
    "infer_shapes",
    "init_weights",
    "layer_module",
    "parse",
    "parse_token",
    "summary",
    "volume_str",
]

__getattr__, __dir__ = attach(__name__)
