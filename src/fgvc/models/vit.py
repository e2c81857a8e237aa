"""Vision Transformer bodies (ViT, Dosovitskiy et al. 2021) for the transformer methods (TransFG).

A :class:`VisionTransformer` is the plain pre-norm ViT of Google's ``vit_models`` checkpoints: a patch
embedding (``patch_embed``, a convolution of kernel and stride ``patch``), a class token, learnt position
embeddings for the checkpoint's grid (224 px: 14 x 14 for 16-px patches), ``depth`` blocks (LayerNorm eps 1e-6 →
multi-head self-attention → residual; LayerNorm → MLP with exact GELU → residual) and the encoder's final
LayerNorm (``norm``). Query, key and value are three linear layers, as in the checkpoints (and in TransFG's
code); each block returns its softmax attention weights with its output, which TransFG's part selection
multiplies through. It is not a :class:`~fgvc.models.backbones.Backbone` (no stride-8/16/32 stages): only the
models that take a ViT accept it, and they refuse a CNN in one line (and the ViT models refuse a CNN).

Registered backbones (``model.backbone``): ``vit_b16``, ``vit_b32``, ``vit_l16``, ``vit_l32``, ``vit_h14``
(Google's ImageNet-21k configurations, TransFG's ``CONFIGS``) and ``vit_ti16`` (192 wide, 3 heads: small enough
for CPU tests; no checkpoint of that layout is read). ``mean``/``std`` are 0.5: the Google checkpoints were
trained on inputs scaled to [-1, 1] (a recipe with its own statistics, such as ``transfg``'s ImageNet values,
overrides them).

Weights (``pretrained``): a path to Google's ``.npz`` (``ViT-B_16.npz`` from
``https://storage.googleapis.com/vit_models/imagenet21k/``; the names ``embedding/kernel``, ``cls``,
``Transformer/posembed_input/pos_embedding``, ``Transformer/encoderblock_{i}/...``,
``Transformer/encoder_norm/...`` are mapped by :func:`npz_state_dict`; a ``head``/``pre_logits`` entry is
ignored), or a ``.pth``/``.pt`` state dict in fgvc's names. ``pretrained=True`` downloads the ``.npz`` into the
torch hub cache when there is internet and otherwise says which file to put where.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import PretrainedWeightsError, load_state_dict_file
from .registry import BackboneSpec, register_backbone

__all__ = ["VisionTransformer", "ViTBlock", "ViTAttention", "ViTConfig", "VIT_CONFIGS", "npz_state_dict",
           "resize_grid_bilinear", "load_weights", "create_vit"]

LN_EPS = 1e-6
NPZ_URL = "https://storage.googleapis.com/vit_models/imagenet21k/{}.npz"
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ViTConfig:
    width: int
    depth: int
    heads: int
    mlp: int
    patch: int
    npz: str | None  # Google's file name (without .npz), None: no checkpoint of this layout
    img_size: int = 224  # the grid the position embeddings are stored for


VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_b16": ViTConfig(768, 12, 12, 3072, 16, "ViT-B_16"),
    "vit_b32": ViTConfig(768, 12, 12, 3072, 32, "ViT-B_32"),
    "vit_l16": ViTConfig(1024, 24, 16, 4096, 16, "ViT-L_16"),
    "vit_l32": ViTConfig(1024, 24, 16, 4096, 32, "ViT-L_32"),
    "vit_h14": ViTConfig(1280, 32, 16, 5120, 14, "ViT-H_14"),
    "vit_ti16": ViTConfig(192, 12, 3, 768, 16, None),
}


class ViTAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value layers; returns (output, softmax weights)."""

    def __init__(self, width: int, heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of {heads} heads")
        self.heads = heads
        self.head_dim = width // heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.attn_drop = nn.Dropout(attention_dropout)
        self.proj_drop = nn.Dropout(attention_dropout)  # the checkpoints' code drops the projection at this rate

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        weights = scores.softmax(dim=-1)
        context = torch.matmul(self.attn_drop(weights), v)
        context = context.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.proj_drop(self.proj(context)), weights


class ViTMlp(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)
        for fc in (self.fc1, self.fc2):  # the initialisation of the checkpoints' PyTorch port (and TransFG's)
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class ViTBlock(nn.Module):
    """Pre-norm transformer block; ``forward`` returns (output, attention weights (B, heads, N, N))."""

    def __init__(self, width: int, heads: int, mlp: int, dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = ViTAttention(width, heads, attention_dropout)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = ViTMlp(width, mlp, dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, weights = self.attn(self.norm1(x))
        x = x + h
        return x + self.mlp(self.norm2(x)), weights

    def set_dropout(self, dropout: float, attention_dropout: float) -> None:
        self.mlp.drop.p = dropout
        self.attn.attn_drop.p = attention_dropout
        self.attn.proj_drop.p = attention_dropout


class VisionTransformer(nn.Module):
    """The ViT body: ``patch_embed``, ``cls_token``, ``pos_embed`` (1, 1 + grid², width), ``pos_drop``,
    ``blocks``, ``norm``. A consumer runs the pieces itself (TransFG replaces the last block)."""

    def __init__(self, config: ViTConfig, name: str) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.width, self.heads, self.patch = config.width, config.heads, config.patch
        self.grid = config.img_size // config.patch
        self.patch_embed = nn.Conv2d(3, config.width, kernel_size=config.patch, stride=config.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid * self.grid, config.width))
        self.pos_drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList(ViTBlock(config.width, config.heads, config.mlp) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width, eps=LN_EPS)

    def set_dropout(self, dropout: float, attention_dropout: float) -> None:
        self.pos_drop.p = dropout
        for block in self.blocks:
            block.set_dropout(dropout, attention_dropout)


def resize_grid_bilinear(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """(1, 1 + g², D) -> (1, 1 + gh·gw, D): the patch part resized bilinearly with aligned corners (what
    ``scipy.ndimage.zoom(order=1)`` computes, the resize of the checkpoints' PyTorch port), the class token's
    entry unchanged. At its own grid the result is the input."""
    old = math.isqrt(pos_embed.shape[1] - 1)
    if (old, old) == tuple(grid):
        return pos_embed
    patches = pos_embed[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bilinear", align_corners=True)
    return torch.cat([pos_embed[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)


# -- weights ------------------------------------------------------------------------------------

_NPZ_BLOCK = {
    "norm1.weight": "LayerNorm_0/scale", "norm1.bias": "LayerNorm_0/bias",
    "norm2.weight": "LayerNorm_2/scale", "norm2.bias": "LayerNorm_2/bias",
    "attn.query": "MultiHeadDotProductAttention_1/query", "attn.key": "MultiHeadDotProductAttention_1/key",
    "attn.value": "MultiHeadDotProductAttention_1/value", "attn.proj": "MultiHeadDotProductAttention_1/out",
    "mlp.fc1": "MlpBlock_3/Dense_0", "mlp.fc2": "MlpBlock_3/Dense_1",
}


def npz_state_dict(arrays: Mapping[str, np.ndarray], depth: int, width: int) -> dict[str, Tensor]:
    """Google's ``vit_models`` names -> fgvc's :class:`VisionTransformer` state dict (kernels transposed: HWIO
    -> OIHW for the patch embedding, (in, heads, head_dim) / (heads, head_dim, out) / (in, out) -> (out, in)
    for the linear layers). The classifier (``head``, ``pre_logits``) is not read."""
    def t(name: str) -> Tensor:
        if name not in arrays:
            raise KeyError(name)
        return torch.from_numpy(np.asarray(arrays[name]).copy())

    state = {
        "patch_embed.weight": t("embedding/kernel").permute(3, 2, 0, 1).contiguous(),
        "patch_embed.bias": t("embedding/bias"),
        "cls_token": t("cls"),
        "pos_embed": t("Transformer/posembed_input/pos_embedding"),
        "norm.weight": t("Transformer/encoder_norm/scale"),
        "norm.bias": t("Transformer/encoder_norm/bias"),
    }
    for i in range(depth):
        root = f"Transformer/encoderblock_{i}"
        for ours, theirs in _NPZ_BLOCK.items():
            if ours.startswith(("norm1", "norm2")):
                state[f"blocks.{i}.{ours}"] = t(f"{root}/{theirs}")
                continue
            kernel, bias = t(f"{root}/{theirs}/kernel"), t(f"{root}/{theirs}/bias")
            if ours == "attn.proj":
                kernel = kernel.reshape(-1, width)  # (heads, head_dim, out) -> (in, out)
            else:
                kernel = kernel.reshape(width if ours.startswith("attn") else kernel.shape[0], -1)
            state[f"blocks.{i}.{ours}.weight"] = kernel.t().contiguous()
            state[f"blocks.{i}.{ours}.bias"] = bias.reshape(-1)
    return state


def _read_weights(net: VisionTransformer, pretrained: bool | str | Path) -> tuple[dict[str, Tensor], str]:
    config = net.config
    if isinstance(pretrained, str | Path) and str(pretrained) not in ("true", "imagenet21k"):
        path = Path(pretrained).expanduser()
        if path.suffix != ".npz":
            return load_state_dict_file(path), str(path)
    else:
        if config.npz is None:
            raise PretrainedWeightsError(f"{net.name}: there is no released checkpoint of this layout; "
                                         "train it from scratch (pretrained: false) or give a weights file")
        url = NPZ_URL.format(config.npz)
        path = Path(torch.hub.get_dir()) / "checkpoints" / f"{config.npz}.npz"
        if not path.is_file():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                urllib.request.urlretrieve(url, path.with_suffix(".npz.part"))  # noqa: S310 - a fixed https URL
                path.with_suffix(".npz.part").replace(path)
            except (urllib.error.URLError, OSError) as e:
                raise PretrainedWeightsError(
                    f"cannot download {url} ({e}).\nWithout internet, download it elsewhere and place it at\n"
                    f"  {path}\nor pass pretrained='path/to/{config.npz}.npz'.") from None
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return npz_state_dict(arrays, config.depth, config.width), str(path)
    except KeyError as e:
        raise PretrainedWeightsError(f"{path} is not a ViT checkpoint of {net.name}'s layout: no {e}") from None
    except (OSError, ValueError) as e:
        raise PretrainedWeightsError(f"cannot read {path}: {e}") from None


def _load(net: VisionTransformer, state: Mapping[str, Tensor], source: str) -> None:
    state = dict(state)
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != net.pos_embed.shape and pos.shape[-1] == net.width:
        state["pos_embed"] = resize_grid_bilinear(pos.to(net.pos_embed.dtype), (net.grid, net.grid))
    own = net.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise PretrainedWeightsError(
            f"weights from {source} do not fit {net.name}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:5]]}")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_weights(net: VisionTransformer, pretrained: bool | str | Path) -> None:
    """Google's ``.npz`` (a path, or True: downloaded) or an fgvc state-dict file into ``net``, strictly; a stored
    position grid other than ``net``'s is resized bilinearly (aligned corners, as their port does)."""
    _load(net, *_read_weights(net, pretrained))


def create_vit(name: str, pretrained: bool | str | Path | None = False) -> VisionTransformer:
    net = VisionTransformer(VIT_CONFIGS[name], name)
    if pretrained:
        load_weights(net, pretrained)
    return net


for _name in VIT_CONFIGS:
    register_backbone(BackboneSpec(_name, lambda pretrained, _n=_name: create_vit(_n, pretrained), HALF, HALF))
