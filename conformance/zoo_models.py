"""PyTorch twins of ``keras.applications`` architectures, so their weights can move both ways.

Each twin is written from Keras's own definition (``keras/src/applications/*.py``), not from
another PyTorch implementation: the torch ones differ from Keras in ways that keep every weight's
shape and change the numbers (ResNet50's stride on the 3x3 instead of the first 1x1, symmetric
padding for stride-2 convolutions, BatchNorm eps 1e-5). What the twins copy from Keras:

- padding: Keras's "same" with stride 2 pads the extra pixel at the bottom and right, and
  ``imagenet_utils.correct_pad`` does the same before a "valid" convolution; :class:`KerasPad2d`
  works both out from the input size at call time, as Keras does from the static shape;
- BatchNorm: eps and momentum as each application sets them (1.001e-5 in ResNet and DenseNet,
  1e-3 in MobileNetV2 and EfficientNet) and torch momentum = 1 - Keras momentum;
- layer order: sub-modules are registered in the order Keras calls its layers (ResNet's
  projection shortcut before the main path), which is the order :func:`transfer_weights` pairs;
- the preprocessing layers Keras puts inside a model: :class:`Rescaling` and
  :class:`Normalization`, which torch has no layer for.

Importing this module imports torch; :mod:`conformance.families.zoo` imports it on first use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

KERAS_EPSILON = 1e-7     # keras.config.epsilon(), read by Normalization at call time


class Rescaling(nn.Module):
    """Keras ``Rescaling``: ``x * scale + offset``, per channel when given per channel (axis 1 here).

    Holds no tensors: Keras keeps scale and offset in the layer's configuration, so the transfer
    pairs the two layers and checks that they agree, and moves nothing.
    """

    def __init__(self, scale: float | Sequence[float], offset: float | Sequence[float] = 0.0) -> None:
        super().__init__()
        self.scale = tuple(map(float, scale)) if isinstance(scale, Sequence) else float(scale)
        self.offset = tuple(map(float, offset)) if isinstance(offset, Sequence) else float(offset)

    def _per_channel(self, value: float | tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
        t = torch.tensor(value, dtype=x.dtype, device=x.device)    # float32, as Keras casts it
        return t.reshape(-1, *([1] * (x.ndim - 2))) if t.ndim else t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._per_channel(self.scale, x) + self._per_channel(self.offset, x)


class Normalization(nn.Module):
    """Keras ``Normalization`` over the channel axis: ``(x - mean) / max(sqrt(variance), epsilon)``.

    Keras's epsilon is ``keras.config.epsilon()`` (1e-7), not an eps added to the variance as in
    BatchNorm. ``count`` is kept because Keras keeps it (for old saved models) and a transfer
    moves every variable.
    """

    mean: torch.Tensor
    variance: torch.Tensor

    def __init__(self, num_features: int, invert: bool = False, epsilon: float = KERAS_EPSILON) -> None:
        super().__init__()
        self.num_features, self.invert, self.epsilon = num_features, invert, epsilon
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("variance", torch.ones(num_features))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1, *([1] * (x.ndim - 2)))
        mean = self.mean.reshape(shape)
        std = torch.clamp_min(torch.sqrt(self.variance), self.epsilon).reshape(shape)
        return mean + x * std if self.invert else (x - mean) / std


def keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "same": the output is ceil(size / stride), and an odd total pad puts the extra
    pixel after (bottom, right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def correct_pad(size: int, kernel: int) -> tuple[int, int]:
    """``keras.applications.imagenet_utils.correct_pad`` for one axis: k//2 after, one less before
    when the size is even."""
    return kernel // 2 - (1 - size % 2), kernel // 2


class KerasPad2d(nn.Module):
    """Zero padding as Keras pads before a strided convolution: ``rule`` is "same" (a Conv2D with
    padding="same") or "correct_pad" (ZeroPadding2D(correct_pad(x, k)) then padding="valid")."""

    def __init__(self, kernel: int, stride: int = 2, rule: str = "correct_pad") -> None:
        super().__init__()
        if rule not in ("same", "correct_pad"):
            raise ValueError(f"rule must be 'same' or 'correct_pad', got {rule!r}")
        self.kernel, self.stride, self.rule = kernel, stride, rule

    def _pads(self, size: int) -> tuple[int, int]:
        return (keras_same_padding(size, self.kernel, self.stride) if self.rule == "same"
                else correct_pad(size, self.kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        return F.pad(x, (left, right, top, bottom))


class ZeroPadMaxPool(nn.Module):
    """Keras's ZeroPadding2D(1) then MaxPooling2D(3, 2) (ResNet, DenseNet): zeros, not -inf, in the
    window; the same as torch's -inf padding only because a ReLU comes before."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)


class GlobalAvgPool(nn.Module):
    """GlobalAveragePooling2D: the mean over H and W, (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Head(nn.Module):
    """The Dense "predictions" layer with ``classifier_activation`` ("softmax" or None for logits)."""

    def __init__(self, features: int, classes: int, activation: str | None) -> None:
        super().__init__()
        if activation not in ("softmax", None):
            raise ValueError(f"classifier_activation must be 'softmax' or None, got {activation!r}")
        self.predictions = nn.Linear(features, classes)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.predictions(x)
        return torch.softmax(x, dim=-1) if self.activation == "softmax" else x


def batch_norm(channels: int, eps: float, keras_momentum: float = 0.99) -> nn.BatchNorm2d:
    """A BatchNorm2d configured as Keras's BatchNormalization(epsilon=eps, momentum=keras_momentum)."""
    return nn.BatchNorm2d(channels, eps=eps, momentum=1.0 - keras_momentum)


class VGG16(nn.Module):
    """``keras.applications.VGG16``: 13 3x3 "same" convolutions with bias and ReLU, five 2x2 max
    pools, then Flatten and three Dense layers. ``input_size`` (H, W) fixes fc1's input length."""

    def __init__(self, classes: int = 1000, classifier_activation: str | None = "softmax",
                 input_size: tuple[int, int] = (224, 224), in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        height, width = (s // 32 for s in input_size)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512 * height * width, 4096), nn.ReLU(),
                                        nn.Linear(4096, 4096), nn.ReLU())
        self.head = Head(4096, classes, classifier_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(self.features(x)))


class Bottleneck(nn.Module):
    """Keras ``residual_block_v1``: the stride is on the first 1x1 (torchvision's ResNet50 puts it
    on the 3x3), every convolution has a bias, and the projection shortcut, when there is one, is
    registered first because Keras creates (and calls) it before the main path."""

    def __init__(self, in_channels: int, filters: int, stride: int, projection: bool) -> None:
        super().__init__()
        eps = 1.001e-5
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, 4 * filters, 1, stride), batch_norm(4 * filters, eps))
                         if projection else None)
        self.conv1, self.bn1 = nn.Conv2d(in_channels, filters, 1, stride), batch_norm(filters, eps)
        self.conv2, self.bn2 = nn.Conv2d(filters, filters, 3, padding=1), batch_norm(filters, eps)
        self.conv3, self.bn3 = nn.Conv2d(filters, 4 * filters, 1), batch_norm(4 * filters, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(shortcut + self.bn3(self.conv3(out)))


class ResNet50(nn.Module):
    """``keras.applications.ResNet50`` (v1): 7x7/2 stem with bias, zero-padded 3x3/2 max pool,
    stages of 3, 4, 6, 3 bottlenecks, global average pooling, Dense."""

    def __init__(self, classes: int = 1000, classifier_activation: str | None = "softmax",
                 in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3)
        self.bn1 = batch_norm(64, 1.001e-5)
        self.pool = ZeroPadMaxPool()
        blocks: list[nn.Module] = []
        channels = 64
        for filters, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(channels, filters, stride if i == 0 else 1, projection=i == 0))
                channels = 4 * filters
        self.blocks = nn.Sequential(*blocks)
        self.avg_pool = GlobalAvgPool()
        self.head = Head(channels, classes, classifier_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        return self.head(self.avg_pool(self.blocks(x)))


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: to the nearest multiple of ``divisor``, never down by > 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """MobileNetV2's ``_inverted_res_block``: expand 1x1 (not in block 0), depthwise 3x3, project
    1x1, each with BatchNorm(eps 1e-3, momentum 0.999) and ReLU6 but the last; a stride-2 block pads
    by ``correct_pad`` (bottom/right for even sizes), a stride-1 block symmetrically ("same")."""

    def __init__(self, in_channels: int, filters: int, stride: int, expansion: int, first: bool) -> None:
        super().__init__()
        hidden = in_channels * expansion
        out = make_divisible(filters)
        bn = lambda c: batch_norm(c, 1e-3, 0.999)   # noqa: E731
        expand = [] if first else [nn.Conv2d(in_channels, hidden, 1, bias=False), bn(hidden), nn.ReLU6()]
        pad: list[nn.Module] = [KerasPad2d(3, 2, "correct_pad")] if stride == 2 else []
        self.layers = nn.Sequential(
            *expand, *pad,
            nn.Conv2d(hidden, hidden, 3, stride, padding=0 if stride == 2 else 1, groups=hidden, bias=False),
            bn(hidden), nn.ReLU6(), nn.Conv2d(hidden, out, 1, bias=False), bn(out))
        self.skip = in_channels == out and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x) if self.skip else self.layers(x)


class MobileNetV2(nn.Module):
    """``keras.applications.MobileNetV2`` at alpha 1.0. The stem is Conv2D(padding="same",
    strides=2): TensorFlow's "same", with the extra row and column at the bottom and right."""

    SETTINGS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
                (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6),
                (160, 1, 6), (320, 1, 6))    # (filters, stride, expansion) of blocks 0..16

    def __init__(self, classes: int = 1000, classifier_activation: str | None = "softmax",
                 in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(KerasPad2d(3, 2, "same"), nn.Conv2d(in_channels, 32, 3, 2, bias=False),
                                  batch_norm(32, 1e-3, 0.999), nn.ReLU6())
        blocks, channels = [], 32
        for i, (filters, stride, expansion) in enumerate(self.SETTINGS):
            blocks.append(InvertedResidual(channels, filters, stride, expansion, first=i == 0))
            channels = make_divisible(filters)
        self.blocks = nn.Sequential(*blocks)
        self.top = nn.Sequential(nn.Conv2d(channels, 1280, 1, bias=False), batch_norm(1280, 1e-3, 0.999),
                                 nn.ReLU6(), GlobalAvgPool())
        self.head = Head(1280, classes, classifier_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.top(self.blocks(self.stem(x))))


class DenseLayer(nn.Module):
    """DenseNet's ``conv_block``: BN-ReLU-1x1 (4 x growth) - BN-ReLU-3x3 (growth), concatenated
    after its input (input first, as Keras's Concatenate([x, x1]))."""

    def __init__(self, in_channels: int, growth: int = 32) -> None:
        super().__init__()
        eps = 1.001e-5
        self.layers = nn.Sequential(
            batch_norm(in_channels, eps), nn.ReLU(), nn.Conv2d(in_channels, 4 * growth, 1, bias=False),
            batch_norm(4 * growth, eps), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.layers(x)], dim=1)


class DenseNet121(nn.Module):
    """``keras.applications.DenseNet121``: dense blocks of 6, 12, 24, 16 layers with transitions
    (BN-ReLU-1x1 halving the channels, 2x2 average pool); every BatchNorm has eps 1.001e-5."""

    def __init__(self, classes: int = 1000, classifier_activation: str | None = "softmax",
                 in_channels: int = 3) -> None:
        super().__init__()
        eps = 1.001e-5
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False), batch_norm(64, eps),
                                   nn.ReLU(), ZeroPadMaxPool()]
        channels = 64
        for i, count in enumerate((6, 12, 24, 16)):
            for _ in range(count):
                layers.append(DenseLayer(channels))
                channels += 32
            if i < 3:
                layers += [batch_norm(channels, eps), nn.ReLU(), nn.Conv2d(channels, channels // 2, 1, bias=False),
                           nn.AvgPool2d(2, 2)]
                channels //= 2
        layers += [batch_norm(channels, eps), nn.ReLU(), GlobalAvgPool()]
        self.features = nn.Sequential(*layers)
        self.head = Head(channels, classes, classifier_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DropConnect(nn.Module):
    """Keras's Dropout(rate, noise_shape=(None, 1, 1, 1)) on a residual branch: whole samples are
    dropped (and the rest scaled by 1 / (1 - rate)) in training; the identity at inference."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.rate).to(x.dtype)
        return x * keep / (1.0 - self.rate)


class MBConv(nn.Module):
    """EfficientNet's ``block``: expand 1x1 (when expand_ratio > 1), depthwise k x k, squeeze and
    excitation (its two 1x1 convolutions have biases), project 1x1; BatchNorm at Keras's defaults
    (eps 1e-3, momentum 0.99) and swish (= SiLU). Stride 2 pads by ``correct_pad``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int,
                 drop_rate: float, se_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = in_channels * expand
        squeezed = max(1, int(in_channels * se_ratio))
        expand_layers = ([nn.Conv2d(in_channels, hidden, 1, bias=False), batch_norm(hidden, 1e-3), nn.SiLU()]
                         if expand != 1 else [])
        pad: list[nn.Module] = [KerasPad2d(kernel, 2, "correct_pad")] if stride == 2 else []
        self.expand = nn.Sequential(
            *expand_layers, *pad,
            nn.Conv2d(hidden, hidden, kernel, stride, padding=0 if stride == 2 else kernel // 2, groups=hidden,
                      bias=False),
            batch_norm(hidden, 1e-3), nn.SiLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, squeezed, 1), nn.SiLU(),
                                nn.Conv2d(squeezed, hidden, 1), nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(hidden, out_channels, 1, bias=False), batch_norm(out_channels, 1e-3))
        self.skip = stride == 1 and in_channels == out_channels
        self.drop = DropConnect(drop_rate) if self.skip and drop_rate > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(x)
        out = self.project(out * self.se(out))
        if not self.skip:
            return out
        return (out if self.drop is None else self.drop(out)) + x


class EfficientNetB0(nn.Module):
    """``keras.applications.EfficientNetB0``: Rescaling(1/255) and Normalization inside the model,
    a correct_pad 3x3/2 stem, 16 MBConv blocks with drop-connect rates rising to 0.2, a 1x1 top
    convolution, global average pooling, Dropout(0.2), Dense. ``imagenet=True`` for a Keras model
    built with weights="imagenet", which has one more Rescaling layer."""

    BLOCKS = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
              (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
    # (kernel, repeats, filters_in, filters_out, expand_ratio, stride): efficientnet.DEFAULT_BLOCKS_ARGS

    IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

    def __init__(self, classes: int = 1000, classifier_activation: str | None = "softmax",
                 in_channels: int = 3, drop_connect_rate: float = 0.2, dropout_rate: float = 0.2,
                 imagenet: bool = False) -> None:
        super().__init__()
        self.rescaling = Rescaling(1.0 / 255.0)
        self.normalization = Normalization(in_channels)
        # Keras adds Rescaling(1 / sqrt(stddev)) after the Normalization only with weights="imagenet"
        # (its Normalization divides by sqrt(variance), the original model by the variance).
        self.imagenet_rescaling = (Rescaling([1.0 / math.sqrt(s) for s in self.IMAGENET_STDDEV_RGB])
                                   if imagenet else None)
        self.stem = nn.Sequential(KerasPad2d(3, 2, "correct_pad"), nn.Conv2d(in_channels, 32, 3, 2, bias=False),
                                  batch_norm(32, 1e-3), nn.SiLU())
        total = sum(repeats for _, repeats, *_ in self.BLOCKS)
        blocks: list[nn.Module] = []
        for kernel, repeats, filters_in, filters_out, expand, stride in self.BLOCKS:
            for j in range(repeats):
                blocks.append(MBConv(filters_in if j == 0 else filters_out, filters_out, kernel,
                                     stride if j == 0 else 1, expand, drop_connect_rate * len(blocks) / total))
        self.blocks = nn.Sequential(*blocks)
        self.top = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), batch_norm(1280, 1e-3), nn.SiLU(),
                                 GlobalAvgPool(), nn.Dropout(dropout_rate))
        self.head = Head(1280, classes, classifier_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalization(self.rescaling(x))
        if self.imagenet_rescaling is not None:
            x = self.imagenet_rescaling(x)
        x = self.stem(x)
        return self.head(self.top(self.blocks(x)))


ARCHITECTURES = {"vgg16": VGG16, "resnet50": ResNet50, "mobilenet_v2": MobileNetV2, "densenet121": DenseNet121,
                 "efficientnet_b0": EfficientNetB0}
