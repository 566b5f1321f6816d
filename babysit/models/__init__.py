"""Models: the architecture grammar, building, initialisation and the per-layer summary table."""

from typing import TYPE_CHECKING

from babysit.lazy import attach

if TYPE_CHECKING:  # the public names; attach() imports each from here on first use
    from babysit.models.build import DepthConcat, MaxoutUnit, ResidualBlock, build, layer_module
    from babysit.models.init import SCHEMES, init_weights
    from babysit.models.shapes import LayerInfo, infer_shapes, volume_str, walk
    from babysit.models.spec import (
        FC,
        Activation,
        BatchNorm,
        Branch,
        Conv,
        Dropout,
        GlobalAvgPool,
        Layer,
        LeakyReLU,
        Maxout,
        Pool,
        Repeat,
        Residual,
        Shape,
        Spec,
        parse,
        parse_token,
    )
    from babysit.models.summary import Row, Summary, format_summary, summary
    from babysit.models.zoo import ZOO

__all__ = [
    "FC",
    "SCHEMES",
    "Activation",
    "BatchNorm",
    "Branch",
    "Conv",
    "DepthConcat",
    "Dropout",
    "GlobalAvgPool",
    "Layer",
    "LayerInfo",
    "LeakyReLU",
    "Maxout",
    "MaxoutUnit",
    "Pool",
    "Repeat",
    "Residual",
    "ResidualBlock",
    "Row",
    "Shape",
    "Spec",
    "Summary",
    "ZOO",
    "build",
    "format_summary",
    "infer_shapes",
    "init_weights",
    "layer_module",
    "parse",
    "parse_token",
    "summary",
    "volume_str",
    "walk",
]

__getattr__, __dir__ = attach(__name__)
