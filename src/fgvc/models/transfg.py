"""TransFG: A Transformer Architecture for Fine-grained Recognition (He et al., AAAI 2022), on a ViT.

The image is cut into overlapping patches (the ViT's patch convolution with stride ``slide_step`` = 12 instead of
16: 37 x 37 patches at 448 px), a class token is prepended and position embeddings added (the checkpoint's grid
resized bilinearly to the model's, once, when it is built). The first L-1 transformer blocks run as usual and
each returns its attention weights; the **part selection module** multiplies the L-1 weight matrices
(``W[L-2] ... W[0]``, per head) and, per head, picks the patch the class token attends to most in the product;
those K = heads patch tokens and the class token go through the last block alone, then the encoder's final
LayerNorm. A linear head on the class token gives the logits.

Loss: cross-entropy (label smoothing with ``smoothing`` > 0) plus the **contrastive loss** on the L2-normalised
class tokens of the batch: ``Σ_same (1 - cos) + Σ_different max(cos - 0.4, 0)``, divided by B².

The authors' code (``TACJu/TransFG``, commit 9336fba) and where fgvc differs, tagged V1.. in
docs/fidelity.md (the TransFG section):

  * V1 — the part selection needs only the class token's row of the product: it is computed as a row vector
    times the matrices (L-2 vector-matrix products instead of L-2 N x N matrix products: at 448 px, N = 1370,
    ~1000 times less work), without gradient (an argmax has none). The same numbers within rounding.
  * V2 — one head (K = 1): their ``squeeze(1)`` drops the part axis and the concatenation fails; fgvc keeps it.
  * V3 — position embeddings at an input size other than ``img_size``: theirs are built for one size and any
    other crashes in the addition; fgvc interpolates the patch grid bicubically for that forward (the parameter
    is untouched; at its own grid it is used as it is).
  * V4 — their last block (the part layer) is not loaded from the checkpoint (their ``load_from`` skips every
    encoder child named ``part*``, so ``encoderblock_11`` of ViT-B/16 is never read) and starts from their
    random initialisation; the final LayerNorm is the checkpoint's. fgvc does the same by default;
    ``part_layer_init: pretrained`` starts it from the checkpoint's last block.
  * V5 — ``split``: their ``train.py`` defaults to ``non-overlap`` (stride 16) while their README and the paper
    train with ``overlap``; fgvc's default is ``overlap`` (``slide_step`` 12).
  * V6 — their step clips the gradient norm at 1 (``clip_grad_norm_``) before SGD; fgvc's trainer clips with
    ``optim.clip_grad_norm`` (1.0 in the TransFG presets), on unscaled gradients under AMP.
  * V7 — their data pipeline normalises with ImageNet statistics although Google's ViT checkpoints were trained
    on [-1, 1] inputs: the ``transfg`` recipe keeps theirs; the ``vit_*`` backbones' own statistics are 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .output import LossTerms, ModelOutput
from .registry import AuthorsLayout, ModelSpec, Picture, register_model
from .vit import VisionTransformer, ViTBlock, resize_grid_bilinear

__all__ = ["TransFG", "select_parts", "contrastive_loss", "authors_key"]

CONTRAST_MARGIN = 0.4  # a different-class pair costs only above this cosine similarity
SPLITS = ("overlap", "non-overlap")
PART_LAYER_INITS = ("random", "pretrained")


def class_attention(weights: list[Tensor]) -> Tensor:
    """(B, heads, N - 1): the class token's row of ``weights[-1] @ ... @ weights[0]`` (each (B, heads, N, N)) over
    the patch tokens — what the authors' ``Part_Attention`` multiplies out, as one row only (V1)."""
    with torch.no_grad():
        row = weights[-1][:, :, :1, :]
        for w in reversed(weights[:-1]):
            row = torch.matmul(row, w)
        return row[:, :, 0, 1:]


def select_parts(weights: list[Tensor]) -> Tensor:
    """(B, heads) indices of the patch tokens (0 = the first patch, the class token not counted) the class token
    attends to most through all layers, per head (:func:`class_attention`)."""
    return class_attention(weights).argmax(dim=-1)


def contrastive_loss(features: Tensor, target: Tensor, margin: float = CONTRAST_MARGIN) -> Tensor:
    """The authors' ``con_loss``: over all ordered pairs of the batch (each image with itself included),
    ``1 - cos`` for a pair of one class and ``max(cos - margin, 0)`` for a pair of two, summed, / B²."""
    b = features.shape[0]
    f = F.normalize(features, dim=1)
    cos = f @ f.t()
    same = (target[:, None] == target[None, :]).to(cos.dtype)
    return (((1.0 - cos) * same).sum() + ((cos - margin).clamp(min=0.0) * (1.0 - same)).sum()) / (b * b)


class TransFG(nn.Module):
    """TransFG on a :class:`~fgvc.models.vit.VisionTransformer` (``vit_b16`` is the paper's).

    Options: ``img_size`` (the grid the position embeddings are kept at: ``model.input_size`` unless given),
    ``split`` ``"overlap"`` | ``"non-overlap"`` and ``slide_step`` (12), ``smoothing`` (label smoothing, 0: plain
    cross-entropy), ``dropout`` (0.1, their ``dropout_rate``: after the position embeddings and in every MLP),
    ``attention_dropout`` (0.0), ``part_layer_init`` ``"random"`` (theirs, V4) | ``"pretrained"``,
    ``checkpointing`` (False: recompute each encoder block in the backward instead of keeping its activations —
    less memory, one more forward of the encoder; the same gradients).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, img_size: int = 448, split: str = "overlap",
                 slide_step: int = 12, smoothing: float = 0.0, dropout: float = 0.1, attention_dropout: float = 0.0,
                 part_layer_init: str = "random", checkpointing: bool = False) -> None:
        super().__init__()
        if not isinstance(backbone, VisionTransformer):
            raise ConfigError("model.backbone: transfg needs a Vision Transformer backbone (vit_b16, vit_b32, "
                              f"vit_l16, vit_l32, vit_h14, vit_ti16), got {getattr(backbone, 'name', backbone)!r}")
        if split not in SPLITS:
            raise ConfigError(f"model.options.split must be one of {', '.join(SPLITS)}, got {split!r}")
        if part_layer_init not in PART_LAYER_INITS:
            raise ConfigError(f"model.options.part_layer_init must be one of {', '.join(PART_LAYER_INITS)}, "
                              f"got {part_layer_init!r}")
        if len(backbone.blocks) < 2:
            raise ConfigError("model.backbone: transfg needs a ViT of at least two blocks")
        patch = backbone.patch
        step = slide_step if split == "overlap" else patch
        if not 0 < step <= patch:
            raise ConfigError(f"model.options.slide_step must be between 1 and the patch size {patch}, got {step}")
        if img_size < patch:
            raise ConfigError(f"model.options.img_size must be at least the patch size {patch}, got {img_size}")
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"model.options.smoothing must be in [0, 1), got {smoothing!r}")
        self.num_classes = num_classes
        self.checkpointing = bool(checkpointing)
        self.img_size = img_size
        self.split = split
        self.step = step
        self.smoothing = float(smoothing)
        self.grid = (img_size - patch) // step + 1
        backbone.patch_embed.stride = (step, step)
        with torch.no_grad():  # the checkpoint's grid resized to the model's, as their load_from does (V3)
            resized = resize_grid_bilinear(backbone.pos_embed.data, (self.grid, self.grid))
        backbone.pos_embed = nn.Parameter(resized.clone())
        last = backbone.blocks[-1]
        backbone.blocks = nn.ModuleList(list(backbone.blocks)[:-1])
        if part_layer_init == "pretrained":
            self.part_layer = last
        else:
            config = backbone.config
            self.part_layer = ViTBlock(config.width, config.heads, config.mlp)
        backbone.set_dropout(dropout, attention_dropout)
        self.part_layer.set_dropout(dropout, attention_dropout)
        self.backbone = backbone
        self.head = nn.Linear(backbone.width, num_classes)  # their part_head: PyTorch's default init

    @property
    def num_parts(self) -> int:
        return self.backbone.heads

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """The position embeddings for a patch grid: the parameter at its own grid, else its patch part resized
        bicubically (corners not aligned) for this forward (V3)."""
        pos = self.backbone.pos_embed
        if grid == (self.grid, self.grid):
            return pos
        patches = pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: Tensor) -> ModelOutput:
        return self._forward(x)[0]

    def _forward(self, x: Tensor) -> tuple[ModelOutput, Tensor, tuple[int, int]]:
        """The output, the class token's attention through all layers before the part layer (:func:`class_attention`,
        what the selection ranks) and the patch grid."""
        vit = self.backbone
        patch = vit.patch
        if x.shape[-2] < patch or x.shape[-1] < patch:
            raise ConfigError(f"transfg: input {tuple(x.shape[-2:])} is smaller than one {patch}-px patch")
        tokens = vit.patch_embed(x)
        grid = (tokens.shape[-2], tokens.shape[-1])
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = vit.pos_drop(tokens + self.position_embedding(grid))
        weights = []
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for block in vit.blocks:
            # gradient checkpointing: keep each block's input only and recompute the block in the backward (its
            # dropout replayed from the saved RNG state: the same gradients)
            tokens, w = checkpoint(block, tokens, use_reentrant=False) if recompute else block(tokens)
            weights.append(w)
        attention = class_attention(weights)
        index = attention.argmax(dim=-1)  # select_parts
        parts = tokens.gather(1, (index + 1)[:, :, None].expand(-1, -1, tokens.shape[-1]))
        tokens, _ = self.part_layer(torch.cat([tokens[:, :1], parts], dim=1))
        cls = vit.norm(tokens)[:, 0]
        logits = self.head(cls)
        return ModelOutput(logits=logits, extras={"class_token": cls, "part_indices": index}), attention, grid

    def explain_forward(self, x: Tensor) -> ModelOutput:
        """``forward`` plus what ``fgvc explain`` draws over the patch grid: where the class token looks through
        all layers (the product the part selection ranks, mean over heads: ``heatmap1``) and the patches selected,
        one per head (``heatmap2``: how many heads chose each)."""
        out, attention, grid = self._forward(x)  # attention: (B, heads, patches)
        b = x.shape[0]
        out.extras["heatmap1"] = attention.mean(dim=1).view(b, *grid)
        chosen = F.one_hot(out.extras["part_indices"], attention.shape[-1]).sum(dim=1)
        out.extras["heatmap2"] = chosen.to(x.dtype).view(b, *grid)
        return out

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        """Their training loss at every epoch: cross-entropy (label-smoothed with ``smoothing``) + contrastive."""
        ce = F.cross_entropy(output.logits, target, label_smoothing=self.smoothing)
        contrast = contrastive_loss(output.extras["class_token"], target)
        return ce + contrast, {"ce": ce, "contrast": contrast}


_AUTHORS_PREFIXES = {
    "transformer.embeddings.patch_embeddings.": "backbone.patch_embed.",
    "transformer.encoder.part_layer.": "part_layer.",
    "transformer.encoder.part_norm.": "backbone.norm.",
    "part_head.": "head.",
}
_AUTHORS_TENSORS = {
    "transformer.embeddings.position_embeddings": "backbone.pos_embed",
    "transformer.embeddings.cls_token": "backbone.cls_token",
}
_AUTHORS_BLOCK = {
    "attention_norm.": "norm1.", "ffn_norm.": "norm2.", "ffn.fc1.": "mlp.fc1.", "ffn.fc2.": "mlp.fc2.",
    "attn.query.": "attn.query.", "attn.key.": "attn.key.", "attn.value.": "attn.value.", "attn.out.": "attn.proj.",
}


def _block_key(rest: str, key: str) -> str:
    for theirs, ours in _AUTHORS_BLOCK.items():
        if rest.startswith(theirs) and rest[len(theirs):] in ("weight", "bias"):
            return ours + rest[len(theirs):]
    raise KeyError(key)


def authors_key(key: str) -> str | None:
    """The authors' state-dict key (their ``VisionTransformer``; what ``save_model`` stores under ``"model"``; a
    ``module.`` prefix is removed) -> fgvc's."""
    key = key.removeprefix("module.")
    if key in _AUTHORS_TENSORS:
        return _AUTHORS_TENSORS[key]
    layer = "transformer.encoder.layer."
    if key.startswith(layer):
        index, _, rest = key[len(layer):].partition(".")
        if not index.isdigit():
            raise KeyError(key)
        return f"backbone.blocks.{index}.{_block_key(rest, key)}"
    for theirs, ours in _AUTHORS_PREFIXES.items():
        if key.startswith(theirs):
            rest = key[len(theirs):]
            if ours == "part_layer.":
                return ours + _block_key(rest, key)
            if rest in ("weight", "bias"):
                return ours + rest
    raise KeyError(key)


register_model(ModelSpec(
    "transfg", TransFG, head_prefixes=("head.",), default_transform="transfg", default_input_size=448,
    input_size_option="img_size",
    param_groups=None, extras=("class_token", "part_indices", "heatmapN"),
    pictures=(Picture.HEATMAPS,), explain_forward=TransFG.explain_forward,
    heatmap_titles=("class-token attention", "selected parts"),
    cam_layer=lambda model: None,
    authors_layout=AuthorsLayout(repository="TACJu/TransFG", rename=authors_key, container="state_dict_key"),
))
