"""The one builder: an ArchSpec table plus options -> nn.Module."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvNormAct, DepthwiseSeparable, InvertedResidual, act_module, make_divisible
from .meta import ModelMeta
from .specs import Act, ArchSpec, ConvSpec, InvertedResidualSpec, Scale, SeparableSpec


def scaled_channels(channels: int, width: float, scale: Scale = Scale.ALWAYS) -> int:
    factor = max(1.0, width) if scale is Scale.UP_ONLY else width
    return make_divisible(channels * factor, 8)


class MobileNet(nn.Module):
    """features (stem, blocks, last conv) -> global average pool -> classifier."""

    def __init__(self, spec: ArchSpec, meta: ModelMeta):
        super().__init__()
        self.spec = spec
        self.meta = meta
        width, padding = meta.width, meta.padding
        override = Act(meta.activation) if meta.activation else None
        bn = dict(bn_eps=spec.bn_eps, padding=padding)

        def act(default: Act) -> Act:
            return override or default

        stem_out = scaled_channels(spec.stem.out, width, spec.stem.scale)
        layers: list[nn.Module] = [
            ConvNormAct(3, stem_out, spec.stem.kernel, spec.stem.stride, act=act(spec.stem.act),
                        bn_momentum=spec.bn_momentum, **bn)
        ]
        cin = stem_out
        for row in spec.blocks:
            cout = scaled_channels(row.out, width)
            for i in range(row.repeats):
                stride = row.stride if i == 0 else 1
                if isinstance(row, SeparableSpec):
                    block = DepthwiseSeparable(cin, cout, stride, act(spec.default_act), padding,
                                               bn_eps=spec.bn_eps)
                else:
                    block = self._bneck(row, cin, cout, stride, width, act(row.act), spec, padding)
                layers.append(block)
                cin = cout
        if spec.last is not None:
            last: ConvSpec = spec.last
            cout = cin * last.times_input if last.times_input else scaled_channels(last.out, width, last.scale)
            layers.append(ConvNormAct(cin, cout, last.kernel, act=act(last.act),
                                      bn_momentum=spec.bn_momentum, **bn))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        dropout = spec.default_dropout if meta.dropout is None else meta.dropout
        if spec.head.hidden:
            hidden = scaled_channels(spec.head.hidden, width)
            self.classifier = nn.Sequential(
                nn.Linear(cin, hidden), act_module(act(spec.head.act)),
                nn.Dropout(p=dropout, inplace=True), nn.Linear(hidden, meta.num_classes))
        else:
            self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(cin, meta.num_classes))
        self._init_weights()

    @staticmethod
    def _bneck(row: InvertedResidualSpec, cin: int, cout: int, stride: int, width: float,
               act: Act, spec: ArchSpec, padding: str) -> InvertedResidual:
        if row.expanded:
            hidden = scaled_channels(row.expanded, width)
        else:
            hidden = int(round(cin * row.expand_ratio))
        squeeze = make_divisible(hidden // 4, 8) if row.se else None
        return InvertedResidual(cin, hidden, cout, row.kernel, stride, act, squeeze,
                                padding, style=spec.style, bn_eps=spec.bn_eps,
                                bn_momentum=spec.bn_momentum)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
