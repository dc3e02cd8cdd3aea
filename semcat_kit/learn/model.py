"""The fusion head: a small MLP over frozen text and image embeddings.

Each modality is projected (``LayerNorm`` + ``Linear``) to ``proj_dim`` (``input_norm=False``: no
``LayerNorm``; ``proj_dim=0``: no ``Linear``); a missing modality
(its presence flag is False) is zeroed *after* projection, so it contributes nothing. The
projections are fused and fed to an MLP (``Linear -> GELU -> Dropout -> Linear``) that outputs
``n_classes`` logits (or ``out_dim`` values, e.g. the bits of binary taxonomy codes).

Fusion modes
------------
``"concat"``  ``h = [t, v, m_t, m_v]`` (projections and the two presence flags).
``"gated"``   ``g = sigmoid(W [t, v, m_t, m_v] + b)`` per sample and feature,
              ``h = g * t + (1 - g) * v``, with ``g`` forced to 1 when the image is missing and
              to 0 when the text is missing.
``"text"``    ``h = t`` (text only; the image input is ignored).
``"image"``   ``h = v`` (image only).

Modality dropout (training only): for each sample that has both modalities, with probability
``modality_dropout`` one of them (chosen at random) is treated as missing, so the head learns to
predict well for products without an image (or without a title).
"""
from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn

__all__ = ["FusionHead", "FUSION_MODES", "Dropout"]

FUSION_MODES = ("concat", "gated", "text", "image")
_ALIASES = {"text-only": "text", "text_only": "text", "image-only": "image", "image_only": "image"}


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on the CPU.

    Inverted dropout: ``out = x * keep / (1 - p')`` with ``keep = u >= round(p * 2**15)``, ``u``
    uniform on ``[0, 2**15)`` -- four such draws from each 63-bit random integer -- and
    ``p' = round(p * 2**15) / 2**15`` (``p`` rounded to 1/32,768, so ``E[out] = x`` exactly). The
    mask is applied as a bitwise AND of the float's bits (a dropped NaN becomes 0). On the CPU
    ``torch.bernoulli_`` draws one random number per element and cost more than the linear head's
    GEMMs (3.8 ms against 1.5 ms for a (256, 1666) batch); this costs ~0.6 ms. Other devices,
    and other dtypes than float32, use ``nn.Dropout``. The masks come from the global torch RNG
    (so the checkpoints' ``rng`` state covers them).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace
                or x.dtype != torch.float32):
            return super().forward(x)
        thr = int(round(self.p * 32768))
        if thr >= 32768:
            return x * 0
        return _MaskedScale.apply(x, _keep_bits(x.shape, thr), 32768.0 / (32768 - thr))


def _keep_bits(shape, thr: int) -> torch.Tensor:
    """int32 of ``shape``: all bits set where an element is kept (probability 1 - thr / 2**15), 0 where dropped."""
    n = 1
    for d in shape:
        n *= int(d)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_()      # 63 random bits each
    u = bits.view(torch.int16)[:n] & 0x7FFF                             # 4 x 15 uniform bits
    drop = (u - thr) >> 15                                              # -1 where u < thr, else 0
    return (~drop).to(torch.int32).view(shape)                          # sign-extended: -1 (kept) or 0


class _MaskedScale(torch.autograd.Function):
    """``(x & mask) * scale`` on float32 bits, and the same on the gradient."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return (x.contiguous().view(torch.int32) & mask).view(torch.float32).mul_(scale)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return (g.contiguous().view(torch.int32) & mask).view(torch.float32).mul_(ctx.scale), None, None


def _tracing() -> bool:
    """Whether the head is being traced or exported (``torch.export``, ONNX, TorchScript): no
    data-dependent branches then."""
    c = getattr(torch, "compiler", None)
    return bool(torch.jit.is_tracing() or (c is not None and (c.is_compiling() or
                                                              getattr(c, "is_exporting", lambda: False)())))


def _zero_rows(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x`` with the rows where ``keep`` is False set to 0 (NaN placeholders included).

    On the CPU: the rows are listed and filled (``x`` itself when none is: no copy); the
    element-wise ``torch.where`` over the whole batch costs as much as a small GEMM there. Other
    devices: ``torch.where`` (no host sync).
    """
    if x.device.type == "cpu" and not _tracing():
        bad = torch.nonzero(~keep).squeeze(1)
        return x if len(bad) == 0 else x.index_fill(0, bad, 0)
    return torch.where(keep.unsqueeze(1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _zero_rows_(x: torch.Tensor, keep: torch.Tensor) -> None:
    """In place: the rows of ``x`` (a view) where ``keep`` is False set to 0."""
    if x.device.type == "cpu" and not _tracing():
        bad = torch.nonzero(~keep).squeeze(1)
        if len(bad):
            x.index_fill_(0, bad, 0)
    else:
        x.masked_fill_(~keep.unsqueeze(1), 0)


def _dim(d, name: str) -> int:
    if d is None:
        return 0
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:   # numpy ints too
        raise ValueError(f"{name} must be a non-negative int or None, not {d!r}")
    return int(d)


class FusionHead(nn.Module):
    """Fusion head over text and image embeddings.

    Parameters
    ----------
    text_dim, image_dim : int or None
        Input embedding sizes; ``None`` or 0 when that modality is absent from the data.
    n_classes : int
        Number of classes (the output size unless ``out_dim`` is given).
    fusion : {"concat", "gated", "text", "image"}
        How the two projections are combined (see the module docstring).
        ``"text-only"`` / ``"image-only"`` are accepted as aliases.
    proj_dim : int
        Size of each modality projection; ``0``: no projection (each embedding is only
        layer-normalised and enters the fusion at its own width).
    hidden : int
        Hidden width of the MLP; ``0`` for a linear head (dropout, then one linear layer from the
        fused projections to the outputs).
    dropout : float
        Dropout before the output layer.
    modality_dropout : float
        Training-time probability of dropping one modality of a sample that has both.
    out_dim : int or None
        Output size when it differs from ``n_classes`` (e.g. ``B`` bits of taxonomy codes).
    input_norm : bool
        ``LayerNorm`` each modality's embedding before its projection (True), or feed the embedding
        as it comes (False; the encoders' L2-normalised vectors keep their geometry, which is what a
        linear model on the raw features, e.g. logistic regression, sees).

    Attributes
    ----------
    config : dict
        The constructor arguments; ``FusionHead(**head.config)`` rebuilds the architecture.
    """

    def __init__(self, text_dim, image_dim, n_classes: int, fusion: str = "concat", proj_dim: int = 256,
                 hidden: int = 512, dropout: float = 0.2, modality_dropout: float = 0.1, out_dim=None,
                 input_norm: bool = True):
        super().__init__()
        text_dim, image_dim = _dim(text_dim, "text_dim"), _dim(image_dim, "image_dim")
        if not isinstance(fusion, str) or _ALIASES.get(fusion, fusion) not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES} (or 'text-only'/'image-only'), not {fusion!r}")
        fusion = _ALIASES.get(fusion, fusion)
        for name, v in (("n_classes", n_classes), ("proj_dim", proj_dim), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < (1 if name == "n_classes" else 0):
                raise ValueError(f"{name} must be a {'positive' if name == 'n_classes' else 'non-negative'} int, "
                                 f"not {v!r}")
        proj_dim, hidden = int(proj_dim), int(hidden)
        if out_dim is not None and (isinstance(out_dim, bool) or not isinstance(out_dim, numbers.Integral)
                                    or out_dim < 1):
            raise ValueError(f"out_dim must be a positive int or None, not {out_dim!r}")
        for name, v in (("dropout", dropout), ("modality_dropout", modality_dropout)):
            if not (0.0 <= float(v) < 1.0):
                raise ValueError(f"{name} must be in [0, 1), not {v!r}")
        if text_dim == 0 and image_dim == 0:
            raise ValueError("FusionHead needs at least one modality: text_dim and image_dim are both None/0")
        if fusion == "text" and text_dim == 0:
            raise ValueError("fusion='text' needs text embeddings but text_dim is None/0; use fusion='image' or 'concat'")
        if fusion == "image" and image_dim == 0:
            raise ValueError("fusion='image' needs image embeddings but image_dim is None/0; use fusion='text' or 'concat'")
        self.config = dict(text_dim=text_dim or None, image_dim=image_dim or None, n_classes=int(n_classes),
                           fusion=fusion, proj_dim=int(proj_dim), hidden=int(hidden), dropout=float(dropout),
                           modality_dropout=float(modality_dropout),
                           out_dim=None if out_dim is None else int(out_dim), input_norm=input_norm)
        self.text_dim, self.image_dim, self.fusion = text_dim, image_dim, fusion
        self.n_classes, self.modality_dropout = int(n_classes), float(modality_dropout)
        self.out_dim = int(out_dim) if out_dim is not None else int(n_classes)
        use_text = text_dim > 0 and fusion != "image"
        use_image = image_dim > 0 and fusion != "text"
        if proj_dim == 0 and fusion == "gated" and use_text and use_image and text_dim != image_dim:
            raise ValueError(f"fusion='gated' mixes the two projections and needs proj_dim > 0 when text_dim "
                             f"({text_dim}) != image_dim ({image_dim}); set proj_dim or use fusion='concat'")

        if not isinstance(input_norm, (bool, np.bool_)):
            raise ValueError(f"input_norm must be True or False, not {input_norm!r}")
        input_norm = bool(input_norm)

        def proj(d):   # [norm or identity, Linear] (parameter names stay text_proj.1.* with or without the norm)
            first = nn.LayerNorm(d) if input_norm else nn.Identity()
            return nn.Sequential(first, nn.Linear(d, proj_dim)) if proj_dim else nn.Sequential(first)

        self.text_proj = proj(text_dim) if use_text else None
        self.image_proj = proj(image_dim) if use_image else None
        width = {"text": text_dim if use_text else 0, "image": image_dim if use_image else 0}
        if proj_dim:
            width = {k: proj_dim if v else 0 for k, v in width.items()}
        self._both = use_text and use_image
        if fusion == "gated" and self._both:
            self.gate = nn.Linear(width["text"] + width["image"] + 2, width["text"])
            fused = width["text"]
        else:
            self.gate = None
            # concat: projections + presence flags (flags only matter when both modalities exist)
            fused = width["text"] + width["image"] + (2 if self._both else 0)
        if hidden == 0:   # a linear head: one layer from the fused projections to the outputs
            self.mlp = nn.Sequential(Dropout(dropout), nn.Linear(fused, self.out_dim))
        else:
            self.mlp = nn.Sequential(nn.Linear(fused, hidden), nn.GELU(), Dropout(dropout),
                                     nn.Linear(hidden, self.out_dim))

    def extra_repr(self) -> str:
        return f"fusion={self.fusion!r}, text_dim={self.text_dim}, image_dim={self.image_dim}, out={self.out_dim}"

    @staticmethod
    def _mask(mask, x: torch.Tensor, name: str) -> torch.Tensor:
        if mask is None:
            return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        mask = torch.as_tensor(mask, device=x.device).bool()
        if mask.shape != (x.shape[0],):
            raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected ({x.shape[0]},), one flag per row")
        return mask

    @staticmethod
    def _identity(proj: nn.Sequential) -> bool:
        return all(isinstance(m, nn.Identity) for m in proj)

    def _check(self, x, dim: int, name: str):
        if x is None:
            raise ValueError(f"this head was built with {name}_dim={dim} and needs the {name} embeddings; got None")
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"{name} embeddings have shape {tuple(x.shape)}; this head expects (N, {dim}). "
                             f"Use the same {name} encoder as in training")
        return x

    def forward(self, text=None, image=None, image_mask=None, text_mask=None) -> torch.Tensor:
        """Logits ``(N, out_dim)`` for text ``(N, text_dim)`` and image ``(N, image_dim)`` embeddings.

        ``image_mask`` / ``text_mask`` are ``(N,)`` booleans, True where the modality is present
        (default: all present). Inputs of a modality the head does not use may be None.
        """
        return self.mlp(self.fused(text, image, image_mask, text_mask))

    def fused(self, text=None, image=None, image_mask=None, text_mask=None) -> torch.Tensor:
        """The fused representation ``h`` that the MLP (or, for a linear head, the output layer)
        reads: ``(N, fused width)``; arguments as in :meth:`forward`."""
        t = v = None
        n = None
        if self.text_proj is not None:
            text = self._check(text, self.text_dim, "text")
            n = text.shape[0]
        if self.image_proj is not None:
            image = self._check(image, self.image_dim, "image")
            if n is not None and image.shape[0] != n:
                raise ValueError(f"text has {n} rows but image has {image.shape[0]}; give one row per product")
            n = image.shape[0]
        if self.text_proj is not None:
            mt = self._mask(text_mask, text, "text_mask")
        if self.image_proj is not None:
            mv = self._mask(image_mask, image, "image_mask")
        if self._both and self.training and self.modality_dropout > 0:
            both = mt & mv
            drop = (torch.rand(n, device=both.device) < self.modality_dropout) & both
            drop_image = torch.rand(n, device=both.device) < 0.5
            mv = mv & ~(drop & drop_image)
            mt = mt & ~(drop & ~drop_image)
        if self._both and self.gate is None and self._identity(self.text_proj) and self._identity(self.image_proj):
            # concat of the embeddings as they are (the linear head): one copy into the fused
            # row, then the missing parts of it set to zero (NaN placeholders included)
            h = torch.cat([text, image, torch.stack([mt, mv], dim=1).to(text.dtype)], dim=1)
            _zero_rows_(h[:, :self.text_dim], mt)
            _zero_rows_(h[:, self.text_dim:self.text_dim + self.image_dim], mv)
            return h
        # a missing modality is zeroed after projection; its input row is zeroed first so that
        # placeholder values there (even NaN) cannot leak through 0 * NaN
        # (an identity projection keeps the zeroed rows zero: no second pass)
        if self.text_proj is not None:
            t = self.text_proj(_zero_rows(text, mt))
            if not self._identity(self.text_proj):
                t = t * mt.unsqueeze(1).to(t.dtype)
        if self.image_proj is not None:
            v = self.image_proj(_zero_rows(image, mv))
            if not self._identity(self.image_proj):
                v = v * mv.unsqueeze(1).to(v.dtype)
        if not self._both:
            h = t if t is not None else v
        else:
            flags = torch.stack([mt, mv], dim=1).to(t.dtype)
            if self.gate is not None:
                g = torch.sigmoid(self.gate(torch.cat([t, v, flags], dim=1)))
                g = torch.where(~mv.unsqueeze(1), torch.ones_like(g), g)
                g = torch.where(~mt.unsqueeze(1), torch.zeros_like(g), g)
                h = g * t + (1 - g) * v
            else:
                h = torch.cat([t, v, flags], dim=1)
        return h
