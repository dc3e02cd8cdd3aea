"""open_clip encoders: text and images in one space, plus zero-shot class probabilities.

Names: ``"openclip:<arch>/<pretrained tag>"`` downloads through open_clip on first use (needs a
network, or a warm HF cache); ``"openclip:<arch>@<checkpoint .pt/.bin/.safetensors>"`` loads a
local file and never touches the network. ``register_openclip_config(name, config)`` makes a
custom architecture known to open_clip (it wraps ``open_clip.add_model_config``).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ._base import Encoder, encoder_device, file_digest, l2_normalize, settings_digest

__all__ = ["OpenClipEncoder", "register_openclip_config", "DEFAULT_TEMPLATES"]

#: Prompt templates for zero-shot classification (class name substituted for ``{}``).
DEFAULT_TEMPLATES = ("a photo of a {}.", "a product photo of a {}.", "a {}, an item for sale.")

_CONFIG_DIRS: list[Path] = []


def register_openclip_config(name: str, config: dict | str | Path) -> None:
    """Make a custom model config known to open_clip under ``name``.

    Parameters
    ----------
    name : str
        Architecture name to use in ``"openclip:<name>@<checkpoint>"``.
    config : dict or path
        An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) or a JSON file.
    """
    import open_clip

    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text())
    if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
        raise ValueError(f"open_clip config for {name!r} must be a dict with embed_dim, vision_cfg and text_cfg")
    d = Path(tempfile.mkdtemp(prefix="semcat_openclip_cfg_"))
    (d / f"{name}.json").write_text(json.dumps(config))
    _CONFIG_DIRS.append(d)
    open_clip.add_model_config(d / f"{name}.json")
    if name not in open_clip.list_models():
        raise RuntimeError(f"open_clip did not register config {name!r}")


class OpenClipEncoder(Encoder):
    """An open_clip model: ``encode_texts``, ``encode_images`` and ``zero_shot_proba``.

    Parameters
    ----------
    arch : str
        open_clip architecture name (``open_clip.list_models()``) or one registered with
        ``register_openclip_config``.
    pretrained : str
        A pretrained tag (``open_clip.list_pretrained_tags_by_model(arch)``) or a local checkpoint path.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, arch: str, pretrained: str, device: str = "auto", half: bool | None = None,
                 cache_dir: str | None = None):
        import open_clip

        if arch not in open_clip.list_models():
            raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models() or register "
                             "a config with sk.encoders.register_openclip_config(name, config)")
        self.device, self.half = encoder_device(device, half)
        local = Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors"} or Path(pretrained).is_file()
        if local and not Path(pretrained).is_file():
            raise FileNotFoundError(f"open_clip checkpoint not found: {pretrained}")
        if not local:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if pretrained not in tags:
                raise ValueError(f"open_clip has no pretrained tag {pretrained!r} for {arch!r}; known tags: "
                                 f"{', '.join(tags) or 'none'}. For local weights use 'openclip:{arch}@<file>'")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=str(pretrained), device=self.device, cache_dir=cache_dir)
        except RuntimeError as e:
            if local:
                raise RuntimeError(f"could not load open_clip checkpoint {pretrained} into {arch!r}: {e}") from e
            raise RuntimeError(f"could not get open_clip weights {arch}/{pretrained}: {e}. Without a network "
                               f"(HF_HUB_OFFLINE=1?) download once elsewhere or use "
                               f"'openclip:{arch}@<local checkpoint file>'") from e
        model.eval().requires_grad_(False)
        if self.half:
            model.half()
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.image_transform = preprocess
        cfg = open_clip.get_model_config(arch) or {}
        self.text_dim = self.image_dim = int(cfg.get("embed_dim") or model.text_projection.shape[-1])
        self.arch, self.pretrained = arch, str(pretrained)
        sep = "@" if local else "/"
        # the full name is loadable again with sk.encoders.load(name) (exported heads rely on that)
        self.name = f"openclip:{arch}{sep}{pretrained}"
        weights_id = {"sha256": file_digest(pretrained)} if local else {"tag": pretrained}
        pp = getattr(model.visual, "preprocess_cfg", {})
        self.fingerprint = f"openclip:{arch}:" + settings_digest(
            {"weights": weights_id, "config": cfg, "preprocess": pp, "open_clip": open_clip.__version__})

    @torch.inference_mode()
    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        return l2_normalize(self.model.encode_text(tokens))

    @torch.inference_mode()
    def embed_image_batch(self, x: torch.Tensor) -> np.ndarray:
        return l2_normalize(self.model.encode_image(self._to_device(x)))

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature inverse (``exp(logit_scale)``), e.g. 100 for CLIP."""
        return float(self.model.logit_scale.exp().item())

    def class_embeddings(self, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES,
                         batch_size: int = 256) -> np.ndarray:
        """One L2-normalised text embedding per class: the mean over prompt templates."""
        class_names, templates = list(class_names), list(templates)
        if not class_names:
            raise ValueError("zero-shot needs at least one class name")
        bad = [t for t in templates if "{}" not in t]
        if not templates or bad:
            raise ValueError(f"every template needs a '{{}}' placeholder for the class name; bad: {bad}")
        prompts = [t.format(c) for c in class_names for t in templates]
        emb = self.encode_texts(prompts, batch_size=batch_size).reshape(len(class_names), len(templates), -1)
        return l2_normalize(emb.mean(axis=1))

    def zero_shot_proba(self, class_names: Sequence[str], images: Sequence | None = None, *,
                        image_embeddings: np.ndarray | None = None,
                        templates: Sequence[str] = DEFAULT_TEMPLATES, temperature: float | None = None,
                        logit_scale: float | None = None, batch_size: int = 32) -> np.ndarray:
        """Class probabilities from class-name prompts, with no training.

        Parameters
        ----------
        class_names : list of str
            E.g. ``taxonomy.names``.
        images : list of paths or PIL images, optional
            Images to classify; or give ``image_embeddings`` (e.g. ``Embeddings.image`` made
            with this same encoder).
        templates : list of str
            Prompt templates containing ``{}``.
        temperature, logit_scale : float, optional
            Softmax sharpness: ``logits = logit_scale * cos``; ``temperature`` is ``1/logit_scale``.
            Default: the model's learned logit scale.

        Returns
        -------
        numpy.ndarray
            float32 ``(N, len(class_names))``, rows sum to 1.
        """
        if (images is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of images= or image_embeddings=")
        if temperature is not None and logit_scale is not None:
            raise ValueError("pass temperature or logit_scale, not both")
        if temperature is not None:
            if temperature <= 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            logit_scale = 1.0 / temperature
        scale = self.logit_scale if logit_scale is None else float(logit_scale)
        if images is not None:
            img = self.encode_images(images, batch_size=batch_size)
        else:
            img = np.asarray(image_embeddings, dtype=np.float32)
            if img.ndim != 2 or img.shape[1] != self.image_dim:
                raise ValueError(f"image_embeddings must be (N, {self.image_dim}) from this encoder, got {img.shape}")
        cls = self.class_embeddings(class_names, templates)
        logits = torch.from_numpy(scale * (img @ cls.T))
        return logits.softmax(dim=-1).numpy().astype(np.float32)


def factory(arg: str, device: str = "auto", **kwargs) -> OpenClipEncoder:
    """Registry factory: ``"openclip:<arch>/<tag>"`` or ``"openclip:<arch>@<checkpoint path>"``."""
    if "@" in arg:
        arch, ckpt = arg.split("@", 1)
    elif "/" in arg:
        arch, ckpt = arg.split("/", 1)
    else:
        raise ValueError(f"openclip:{arg}: use 'openclip:<arch>/<pretrained tag>' (e.g. "
                         "'openclip:ViT-B-32/laion2b_s34b_b79k') or 'openclip:<arch>@<checkpoint file>'")
    if not arch or not ckpt:
        raise ValueError(f"openclip:{arg}: both the architecture and the weights are required")
    return OpenClipEncoder(arch, ckpt, device=device, **kwargs)
