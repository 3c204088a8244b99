"""QKFormer with a binary FFN: the SEI-BWSNN Transformer (Meng et al., arXiv 2508.12609).

SEI-BWSNN binarizes only the FFN (MLP) weights of a spiking Transformer and reports 82.52 % ImageNet top-1
at T = 2. The paper names neither the Transformer nor its block; this module is a reconstruction.

From QKFormer (Zhou et al., "QKFormer: Hierarchical Spiking Transformer using Q-K Attention", NeurIPS 2024):

* three stages at widths C/4, C/2, C; QKFormer-10 has 1, 2 and 7 blocks, the first two stages with
  Token-QK attention, the last with spiking self-attention (SSA); the same number of heads in every stage;
* Token-QK attention: spike Q summed over the channels of each head -> LIF (threshold 0.5) -> mask on
  spike K -> 1x1 projection; SSA: ``Q (K^T V) * 0.125`` -> LIF (threshold 0.5) -> 1x1 projection;
  q/k/v/projection are 1x1 convs + BatchNorm; MLP: 1x1 conv C -> rC, BN, LIF, 1x1 conv rC -> C, BN;
* spiking patch embedding with deformed shortcut: ImageNet stem conv3x3 -> BN -> maxpool -> LIF twice, then
  conv3x3 -> BN, plus a 1x1 stride-2 conv -> BN shortcut from the first spikes (224 -> 56 tokens per side);
  between stages conv3x3 -> BN -> maxpool -> LIF -> conv3x3 -> BN plus a 1x1 stride-2 conv -> BN shortcut.
  QKFormer's CIFAR model keeps full resolution in the stem (no pools, stride-1 shortcut) and pools after
  the second conv between stages (32 -> 32 -> 16 -> 8); ``patch_embed="cifar"`` builds that (with the
  pool before the BN, so that the real-valued output stays centred);
* the head: global average over tokens, then a Linear.

The SEI reconstruction:

* membrane-shortcut ordering (Meta-SpikeFormer, Yao et al., ICLR 2024): the residual stream is real-valued,
  every branch and every later patch embedding starts with a LIF and ends with BN (QKFormer ends them with
  a LIF and adds spikes), so every weight layer after the first conv sees spikes in {0, 1};
* ``binary_scope``: ``"ffn"`` makes the two FFN 1x1 convs of every block 1-bit, ``"all"`` also the
  attention q/k/v/projection, ``"none"`` nothing (as does the kit option ``binary=False``); patch
  embedding and head stay full precision;
* ``ffn_shortcut="per_layer"``: BinaryViT's shortcut around each binary FFN layer (Le et al., CVPR-W 2023):
  ``h = BN1(conv1(LIF1(x))) + cat(x, ..., x)`` (r copies), ``y = BN2(conv2(LIF2(h))) + avgpool_r(h)``
  (mean of each group of r consecutive channels), ``x <- x + y``;
* the head is ``LIF -> token mean -> Linear`` per time step (Meta-SpikeFormer's head LIF). bsnn's methods
  average the T outputs; the mean of a linear map is the map of the mean, so this equals QKFormer's head
  on the mean over T. ``head_kd`` adds a DeiT-style distillation head (training: ``(out, out_kd)``,
  evaluation: their mean);
* 1x1 convs followed by BN carry no bias (QKFormer's projection and MLP convs have a redundant one);
* ``drop_path``: stochastic depth on both residual branches, rate rising linearly over the blocks to
  ``drop_path``, one draw per sample for all T steps (QKFormer's code computes these rates but never
  applies them).

Parameters (``sum(p.numel())``: weights, biases and BN affine; BN running statistics are buffers), 1000
classes: QKFormer-10-768 as built by its code 64,962,760 (the published 64.96 M); ``sei_qkformer_10_768``
64,924,744 (no conv biases before BN: -38,016), of which 35,684,352 (54.96 %) are binary with
``binary_scope="ffn"`` and 53,194,752 (81.93 %) with ``"all"``. ``sei_qkformer_tiny`` (10 classes):
750,554, 303,104 of them binary.
"""
from __future__ import annotations

from typing import Sequence

import torch
from spikingjelly.activation_based import base
from torch import nn

from ..nn import fold
from ..nn.init import classifier_
from .layers import LayerKit
from .registry import register_model

__all__ = ["SEIQKFormer", "TokenQKAttention", "SpikingSelfAttention", "SpikingMLP", "QKFormerBlock",
           "PatchEmbedInit", "PatchEmbedStage", "DropPath", "drop_path", "BINARY_SCOPES", "FFN_SHORTCUTS",
           "PATCH_EMBEDS", "sei_qkformer", "sei_qkformer_10_768", "sei_qkformer_tiny"]

BINARY_SCOPES = ("ffn", "all", "none")
FFN_SHORTCUTS = ("per_layer", "none")
PATCH_EMBEDS = ("auto", "imagenet", "cifar")
SSA_SCALE = 0.125            # QKFormer's fixed attention scale
ATTN_THRESHOLD = 0.5         # QKFormer's attention LIF threshold


def drop_path(x: torch.Tensor, keep: torch.Tensor, batch_dim: int) -> torch.Tensor:
    """Stochastic depth: scale sample b of ``x`` by ``keep[b]`` (0 or 1/(1-p))."""
    return x * keep.view(keep.shape + (1,) * (x.dim() - batch_dim - 1))


class DropPath(base.MemoryModule):
    """Drops a residual branch for whole samples. The mask is drawn once per sample for all time steps:
    over [T, B] in "m" mode; in "s" mode it is kept until ``functional.reset_net``."""

    def __init__(self, p: float, step_mode: str = "s"):
        super().__init__()
        self.p = p
        self.step_mode = step_mode
        self.register_memory("keep", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        batch_dim = 1 if self.step_mode == "m" else 0
        keep = self.keep
        if keep is None or keep.shape[0] != x.shape[batch_dim] or keep.device != x.device:
            keep = x.new_empty(x.shape[batch_dim]).bernoulli_(1.0 - self.p) / (1.0 - self.p)
            if self.step_mode == "s":
                self.keep = keep
        return drop_path(x, keep, batch_dim)

    def extra_repr(self) -> str:
        return f"p={self.p}, step_mode={self.step_mode}"


def _norm(kit: LayerKit, channels: int, binary: bool) -> nn.Module:
    return kit.norm(channels) if binary else nn.BatchNorm2d(channels)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., C, H, W] -> [..., heads, C / heads, H * W]."""
    *lead, c, h, w = x.shape
    return x.reshape(*lead, heads, c // heads, h * w)


class _Attention(nn.Module, base.StepModule):
    """Shared parts: input LIF, spike projections (1x1 conv -> BN -> LIF), attention LIF, output projection.
    The input LIF feeds the q/k/v convs only (trace-routed online); the other neurons feed products, so
    they emit no trace and the output projection is not routed."""

    def __init__(self, kit: LayerKit, dim: int, heads: int, binary: bool, names: Sequence[str]):
        super().__init__()
        self.step_mode = kit.step_mode
        self.heads = heads
        self.lif = kit.neuron()
        for n in names:
            self.add_module(f"{n}_conv", kit.conv(dim, dim, 1, 1, 0, binary=binary))
            self.add_module(f"{n}_bn", _norm(kit, dim, binary))
            self.add_module(f"{n}_lif", kit.neuron(emit_trace=False))
        self.attn_lif = kit.neuron(v_threshold=ATTN_THRESHOLD, emit_trace=False)
        self.proj_conv = kit.conv(dim, dim, 1, 1, 0, binary=binary, routed=False)
        self.proj_bn = _norm(kit, dim, binary)

    def _spikes(self, name: str, s: torch.Tensor) -> torch.Tensor:
        sm = self.step_mode
        conv, bn, lif = (getattr(self, f"{name}_{part}") for part in ("conv", "bn", "lif"))
        return lif(fold(bn, fold(conv, s, sm), sm))

    def _project(self, y: torch.Tensor) -> torch.Tensor:
        return fold(self.proj_bn, fold(self.proj_conv, y, self.step_mode), self.step_mode)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, step_mode={self.step_mode}"


class TokenQKAttention(_Attention):
    """QKFormer's Token-QK attention: a binary token mask from Q (per head) selects tokens of K."""

    def __init__(self, kit: LayerKit, dim: int, heads: int, binary: bool = False):
        super().__init__(kit, dim, heads, binary, ("q", "k"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(x)
        q, k = self._spikes("q", s), self._spikes("k", s)
        mask = self.attn_lif(_heads(q, self.heads).sum(-2, keepdim=True))     # [..., heads, 1, N]
        return self._project((mask * _heads(k, self.heads)).reshape(k.shape))


class SpikingSelfAttention(_Attention):
    """Spikformer/QKFormer SSA without softmax: ``Q (K^T V) * 0.125`` -> LIF (threshold 0.5)."""

    def __init__(self, kit: LayerKit, dim: int, heads: int, binary: bool = False):
        super().__init__(kit, dim, heads, binary, ("q", "k", "v"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(x)
        q, k, v = (_heads(self._spikes(n, s), self.heads) for n in ("q", "k", "v"))   # [..., heads, d, N]
        z = (q.transpose(-1, -2) @ (k @ v.transpose(-1, -2))) * SSA_SCALE           # [..., heads, N, d]
        y = self.attn_lif(z.transpose(-1, -2).reshape(*q.shape[:-3], -1, *x.shape[-2:]))
        return self._project(y)


class SpikingMLP(nn.Module, base.StepModule):
    """``LIF1 -> conv1 (C -> rC) -> BN1 -> LIF2 -> conv2 (rC -> C) -> BN2``; ``shortcut="per_layer"`` adds
    ``cat(x, ..., x)`` after BN1 and ``avgpool_r(h)`` after BN2 (BinaryViT)."""

    def __init__(self, kit: LayerKit, dim: int, ratio: int, binary: bool, shortcut: str = "per_layer"):
        super().__init__()
        self.step_mode = kit.step_mode
        self.ratio, self.shortcut = ratio, shortcut
        self.lif1, self.conv1 = kit.neuron(), kit.conv(dim, dim * ratio, 1, 1, 0, binary=binary)
        self.bn1 = _norm(kit, dim * ratio, binary)
        self.lif2, self.conv2 = kit.neuron(), kit.conv(dim * ratio, dim, 1, 1, 0, binary=binary)
        self.bn2 = _norm(kit, dim, binary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sm = self.step_mode
        h = fold(self.bn1, fold(self.conv1, self.lif1(x), sm), sm)
        if self.shortcut == "per_layer":
            h = h + torch.cat([x] * self.ratio, dim=-3)
        y = fold(self.bn2, fold(self.conv2, self.lif2(h), sm), sm)
        if self.shortcut == "per_layer":
            *lead, c, hh, ww = h.shape
            y = y + h.reshape(*lead, c // self.ratio, self.ratio, hh, ww).mean(-3)
        return y

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, shortcut={self.shortcut}, step_mode={self.step_mode}"


class QKFormerBlock(nn.Module, base.StepModule):
    """``x <- x + attn(x)``, ``x <- x + mlp(x)`` on the real-valued stream."""

    def __init__(self, kit: LayerKit, dim: int, heads: int, mlp_ratio: int, attention: str, attn_binary: bool,
                 ffn_binary: bool, ffn_shortcut: str, drop_path: float = 0.0):
        super().__init__()
        self.step_mode = kit.step_mode
        attn_cls = TokenQKAttention if attention == "token_qk" else SpikingSelfAttention
        self.attn = attn_cls(kit, dim, heads, attn_binary)
        self.mlp = SpikingMLP(kit, dim, mlp_ratio, ffn_binary, ffn_shortcut)
        self.drop_attn = DropPath(drop_path, kit.step_mode) if drop_path > 0 else None
        self.drop_mlp = DropPath(drop_path, kit.step_mode) if drop_path > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(x)
        x = x + (a if self.drop_attn is None else self.drop_attn(a))
        m = self.mlp(x)
        return x + (m if self.drop_mlp is None else self.drop_mlp(m))


def _pool(kind: str) -> nn.Module:
    return nn.MaxPool2d(3, 2, 1) if kind == "pool" else nn.Identity()


class PatchEmbedInit(nn.Module, base.StepModule):
    """Stem (full precision). ``"imagenet"``: conv -> BN -> maxpool -> LIF -> conv -> BN -> maxpool -> LIF ->
    conv -> BN, plus 1x1 stride-2 conv -> BN on the first spikes (H/4). ``"cifar"``: conv -> BN -> LIF ->
    conv -> BN, plus 1x1 conv -> BN (H)."""

    def __init__(self, kit: LayerKit, cin: int, dim: int, variant: str):
        super().__init__()
        self.step_mode = kit.step_mode
        self.variant = variant
        half, imagenet = dim // 2, variant == "imagenet"
        self.conv0, self.bn0 = nn.Conv2d(cin, half, 3, 1, 1, bias=False), nn.BatchNorm2d(half)
        self.pool0, self.lif0 = _pool("pool" if imagenet else "none"), kit.neuron()
        self.conv1, self.bn1 = kit.spike_input(nn.Conv2d(half, dim, 3, 1, 1, bias=False)), nn.BatchNorm2d(dim)
        if imagenet:
            self.pool1, self.lif1 = _pool("pool"), kit.neuron()
            self.conv2, self.bn2 = kit.spike_input(nn.Conv2d(dim, dim, 3, 1, 1, bias=False)), nn.BatchNorm2d(dim)
        self.res_conv = kit.spike_input(nn.Conv2d(half, dim, 1, 2 if imagenet else 1, 0, bias=False))
        self.res_bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sm = self.step_mode
        s0 = self.lif0(fold(self.pool0, fold(self.bn0, fold(self.conv0, x, sm), sm), sm))
        if self.variant == "imagenet":
            s1 = self.lif1(fold(self.pool1, fold(self.bn1, fold(self.conv1, s0, sm), sm), sm))
            main = fold(self.bn2, fold(self.conv2, s1, sm), sm)
        else:
            main = fold(self.bn1, fold(self.conv1, s0, sm), sm)
        return main + fold(self.res_bn, fold(self.res_conv, s0, sm), sm)


class PatchEmbedStage(nn.Module, base.StepModule):
    """Downsampling between stages (full precision): ``s = LIF(x)``; ``"imagenet"``: conv -> BN -> maxpool
    -> LIF -> conv -> BN; ``"cifar"``: conv -> BN -> LIF -> conv -> maxpool -> BN (QKFormer pools after
    this BN; pooling first keeps the real-valued output centred); plus 1x1 stride-2 conv -> BN on s."""

    def __init__(self, kit: LayerKit, cin: int, dim: int, variant: str):
        super().__init__()
        self.step_mode = kit.step_mode
        self.variant = variant
        self.lif_in = kit.neuron()
        self.conv_a, self.bn_a = kit.spike_input(nn.Conv2d(cin, dim, 3, 1, 1, bias=False)), nn.BatchNorm2d(dim)
        self.lif_mid = kit.neuron()
        self.conv_b, self.bn_b = kit.spike_input(nn.Conv2d(dim, dim, 3, 1, 1, bias=False)), nn.BatchNorm2d(dim)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.res_conv = kit.spike_input(nn.Conv2d(cin, dim, 1, 2, 0, bias=False))
        self.res_bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sm = self.step_mode
        s = self.lif_in(x)
        h = fold(self.bn_a, fold(self.conv_a, s, sm), sm)
        if self.variant == "imagenet":
            main = fold(self.bn_b, fold(self.conv_b, self.lif_mid(fold(self.pool, h, sm)), sm), sm)
        else:
            main = fold(self.bn_b, fold(self.pool, fold(self.conv_b, self.lif_mid(h), sm), sm), sm)
        return main + fold(self.res_bn, fold(self.res_conv, s, sm), sm)


def _check_options(num_classes, in_channels, image_size, embed_dim, depths, num_heads, mlp_ratio, patch_embed,
                   binary_scope, ffn_shortcut, drop_path) -> None:
    def positive_int(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")

    for name, v in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size),
                    ("embed_dim", embed_dim), ("num_heads", num_heads), ("mlp_ratio", mlp_ratio)):
        positive_int(name, v)
    if (not isinstance(depths, Sequence) or len(depths) != 3
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in depths) or sum(depths) < 1):
        raise ValueError(f"depths must be three non-negative block counts (stages at C/4, C/2, C), got {depths!r}")
    if embed_dim % (4 * num_heads):
        raise ValueError(f"embed_dim must be divisible by 4 * num_heads (C/4 is split into heads), "
                         f"got embed_dim={embed_dim}, num_heads={num_heads}")
    if embed_dim % 8:
        raise ValueError(f"embed_dim must be a multiple of 8 (the stem starts at embed_dim / 8), got {embed_dim}")
    for name, v, allowed in (("patch_embed", patch_embed, PATCH_EMBEDS), ("binary_scope", binary_scope, BINARY_SCOPES),
                             ("ffn_shortcut", ffn_shortcut, FFN_SHORTCUTS)):
        if v not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {v!r}")
    if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0.0 <= drop_path < 1.0:
        raise ValueError(f"drop_path must be in [0, 1), got {drop_path!r}")


class SEIQKFormer(nn.Module, base.StepModule):
    """Hierarchical spiking Transformer (QKFormer) with a binary FFN. Input [B, C, H, W] ("s") or
    [T, B, C, H, W] ("m"); output [B, classes] or [T, B, classes] (a pair with ``head_kd`` in training)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, embed_dim: int = 768,
                 depths: Sequence[int] = (1, 2, 7), num_heads: int = 12, mlp_ratio: int = 4,
                 patch_embed: str = "auto", binary_scope: str = "ffn", ffn_shortcut: str = "per_layer",
                 head_kd: bool = False, drop_path: float = 0.0, kit: LayerKit | None = None):
        super().__init__()
        _check_options(num_classes, in_channels, image_size, embed_dim, depths, num_heads, mlp_ratio, patch_embed,
                       binary_scope, ffn_shortcut, drop_path)
        kit = kit or LayerKit()
        self.step_mode = kit.step_mode
        if patch_embed == "auto":
            patch_embed = "cifar" if image_size < 128 else "imagenet"
        self.binary_scope, self.ffn_shortcut = binary_scope, ffn_shortcut
        ffn_binary = kit.binary and binary_scope != "none"
        attn_binary = kit.binary and binary_scope == "all"
        depths, dims = tuple(depths), (embed_dim // 4, embed_dim // 2, embed_dim)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.patch_embed1 = PatchEmbedInit(kit, in_channels, dims[0], patch_embed)
        self.patch_embed2 = PatchEmbedStage(kit, dims[0], dims[1], patch_embed)
        self.patch_embed3 = PatchEmbedStage(kit, dims[1], dims[2], patch_embed)
        stages = []
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            attention = "ssa" if i == 2 else "token_qk"
            start = sum(depths[:i])
            stages.append(nn.Sequential(*(
                QKFormerBlock(kit, dim, num_heads, mlp_ratio, attention, attn_binary, ffn_binary, ffn_shortcut,
                              rates[start + j]) for j in range(depth))))
        self.stage1, self.stage2, self.stage3 = stages
        self.head_lif = kit.neuron()
        self.head = kit.spike_input(self._linear(embed_dim, num_classes))
        self.head_kd = kit.spike_input(self._linear(embed_dim, num_classes)) if head_kd else None

    @staticmethod
    def _linear(fin: int, fout: int) -> nn.Linear:
        return classifier_(nn.Linear(fin, fout), std=0.02, truncated=True)

    def forward(self, x: torch.Tensor):
        want = 5 if self.step_mode == "m" else 4
        if x.dim() != want:
            raise ValueError(f"step_mode {self.step_mode!r} takes a {want}-d input "
                             f"({'[T, B, C, H, W]' if want == 5 else '[B, C, H, W]'}), got shape {tuple(x.shape)}")
        x = self.stage1(self.patch_embed1(x))
        x = self.stage2(self.patch_embed2(x))
        x = self.stage3(self.patch_embed3(x))
        feats = self.head_lif(x).flatten(-2).mean(-1)           # spike rate per channel, [..., C]
        out = fold(self.head, feats, self.step_mode)
        if self.head_kd is None:
            return out
        kd = fold(self.head_kd, feats, self.step_mode)
        return (out, kd) if self.training else (out + kd) / 2

    def extra_repr(self) -> str:
        return f"binary_scope={self.binary_scope}, ffn_shortcut={self.ffn_shortcut}, step_mode={self.step_mode}"


@register_model("sei_qkformer")
def sei_qkformer(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, embed_dim: int = 768,
                 depths: Sequence[int] = (1, 2, 7), num_heads: int = 12, mlp_ratio: int = 4,
                 patch_embed: str = "auto", binary_scope: str = "ffn", ffn_shortcut: str = "per_layer",
                 head_kd: bool = False, drop_path: float = 0.0, method: str = "bptt", **kit) -> SEIQKFormer:
    """QKFormer with a binary FFN. Stages at embed_dim/4, /2, /1 with ``depths`` blocks (Token-QK, Token-QK,
    SSA), ``num_heads`` heads in every stage. ``patch_embed``: ``"imagenet"`` (tokens at H/16),
    ``"cifar"`` (H/4), ``"auto"`` (cifar below 128 pixels). ``**kit``: neuron / binarizer / AGMM options."""
    return SEIQKFormer(num_classes, in_channels, image_size, embed_dim, depths, num_heads, mlp_ratio,
                       patch_embed, binary_scope, ffn_shortcut, head_kd, drop_path, LayerKit(method, **kit))


@register_model("sei_qkformer_10_768")
def sei_qkformer_10_768(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
                        binary_scope: str = "ffn", ffn_shortcut: str = "per_layer", head_kd: bool = False,
                        drop_path: float = 0.0, method: str = "bptt", **kit) -> SEIQKFormer:
    """QKFormer-10-768 (ImageNet 224x224): blocks 1/2/7 at 192/384/768 channels, 12 heads, MLP ratio 4;
    64.92 M parameters at 1000 classes (QKFormer: 64.96 M), 35.68 M of them binary with the FFN scope."""
    return sei_qkformer(num_classes, in_channels, image_size, 768, (1, 2, 7), 12, 4, "auto", binary_scope,
                        ffn_shortcut, head_kd, drop_path, method, **kit)


@register_model("sei_qkformer_tiny")
def sei_qkformer_tiny(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                      binary_scope: str = "ffn", ffn_shortcut: str = "per_layer", head_kd: bool = False,
                      drop_path: float = 0.0, method: str = "bptt", **kit) -> SEIQKFormer:
    """CPU-sized QKFormer for 32x32 inputs (QKFormer's CIFAR patch embedding): blocks 1/1/2 at 32/64/128
    channels, 4 heads, MLP ratio 4; 0.75 M parameters at 10 classes."""
    return sei_qkformer(num_classes, in_channels, image_size, 128, (1, 1, 2), 4, 4, "auto", binary_scope,
                        ffn_shortcut, head_kd, drop_path, method, **kit)
