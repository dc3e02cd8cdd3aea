"""A work directory shared by the tutorial notebooks: each stage computed once, reused after.

The notebooks (and anyone scripting the same flow) describe *what* to use — a catalog, a taxonomy,
a text and an image encoder, a split seed — and the :class:`Workspace` builds each stage on first
use and keeps it on disk under ``work_dir``. A Workspace *is* a
:class:`~semcat_kit.orchestrate.pipeline.Pipeline` (the object every ``semcat`` command runs) whose
embedding cache is ``work_dir/cache``, plus what a notebook keeps on disk:

===================  ==========================================================================
``load_catalog``     the product DataFrame (tutorial, a Kaggle fashion folder, a CSV/Parquet file)
``taxonomy``         the class set: an external taxonomy, or the catalog labels (conflicts kept)
``embeddings``       :func:`~semcat_kit.encode_catalog` output, cached by content under ``cache/``
``label_embeddings`` class-text embeddings (``similarity.class_texts`` + the text encoder)
``neighbors``        sparse top-k semantic neighbours of every class (tree neighbours without text)
``split``            stratified train/val/test split of the labelled rows (rare classes train-only)
``suite``            a comparison suite trained over seeds, kept with its heads in ``suites/``
``baselines``        the peers a user would pick instead, scored on the same split
===================  ==========================================================================

A notebook run alone therefore rebuilds exactly what it needs, and a notebook run after another
reuses its work (the encoder cache makes re-encoding a lookup).
"""
from __future__ import annotations

import hashlib
import html
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..datasets import read_csv
from .config import PipelineConfig
from .pipeline import Pipeline
from ..datasets.taxonomy import Taxonomy, TaxonomyMergeWarning

__all__ = ["Workspace", "SuiteResult", "Validation"]

#: What the stored suite and peer tables hold, part of their folder key: a change of the columns or of
#: how one is computed (here: each run's solver record, solvers.json) re-trains folders written before.
TABLE_VERSION = "solver-records"


class Validation:
    """What :meth:`Workspace.validate` found: ``summary`` (a Series: products, labelled, unlabelled,
    unknown_labels, classes, classes_with_products; ``v["classes"]`` reads it) and ``merges`` (the
    category paths the taxonomy merged into another class, :meth:`Taxonomy.merges`).

    In a notebook it shows the summary and, when paths were merged, one collapsed line that opens
    to the list (an HTML ``<details>`` element) instead of a wall of warnings.
    """

    def __init__(self, summary: pd.Series, merges: pd.DataFrame):
        self.summary, self.merges = summary, merges

    def __getitem__(self, key):
        return self.summary[key]

    def merge_line(self) -> str:
        m = self.merges
        n = len(m)
        n_case = int((m["reason"] == "letter case").sum()) if "reason" in m.columns else 0
        parts = []
        if n - n_case:
            parts.append(f"{n - n_case} category path{'s' if n - n_case != 1 else ''} merged into the most frequent "
                         "path of the same name (a few items filed under another parent)")
        if n_case:
            parts.append(f"{n_case} spelling{'s' if n_case != 1 else ''} merged into the same category spelled in "
                         "another letter case by most of its items")
        return "; ".join(parts)

    def _repr_html_(self) -> str:
        from ..see.tables import html_table

        summary = self.summary.rename(index=lambda k: str(k).replace("_", " "))
        out = html_table(summary.rename("value").rename_axis("check").reset_index())
        if len(self.merges):
            out += ("<details class='semcat-merges' style='margin:4px 0'><summary style='cursor:pointer;color:#8a5a00'>"
                    f"⚠ {html.escape(self.merge_line())}: click to list them (also <code>ws.merges()</code>)"
                    "</summary>" + html_table(self.merges, {"count": "items", "resolved_to": "merged into",
                                                            "resolved_count": "items there"}) + "</details>")
        return out

    def __repr__(self) -> str:
        text = self.summary.to_string()
        return text + (f"\n{self.merge_line()}: ws.merges() lists them" if len(self.merges) else "")


class Workspace(Pipeline):
    """The notebooks' pipeline state on disk: a :class:`~semcat_kit.orchestrate.pipeline.Pipeline`
    whose stages are cached under ``work_dir``.

    Parameters
    ----------
    work_dir : path
        Folder for caches, splits, trained heads and result tables (created if missing).
    config : PipelineConfig, optional
        The pipeline configuration (default ``PipelineConfig()``).
    **fields
        :class:`~semcat_kit.orchestrate.config.PipelineConfig` fields that override ``config``'s
        (``catalog``, ``catalog_options``, ``taxonomy``, ``text_encoder``, ``image_encoder``, ``k``,
        the split, ``device``, ...); their defaults are the dataclass's. The configuration is
        ``ws.config``.
    """

    cache_label_texts = True        # the work dir's cache is the notebooks' own: class texts are looked up there

    def __init__(self, work_dir, config: PipelineConfig | None = None, **fields):
        self.work_dir = Path(work_dir).expanduser().resolve()
        super().__init__(config, cache_dir=self.work_dir / "cache", **fields)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Workspace({str(self.work_dir)!r}, {super().__repr__()})"

    # ------------------------------------------------------------------ the taxonomy's merges, reported once
    def validate(self) -> Validation:
        """Check every parameter up front (see :meth:`Pipeline.validate`); one-sentence errors.

        Category paths the taxonomy merges (:class:`~semcat_kit.datasets.taxonomy.TaxonomyMergeWarning`)
        are reported once, in the returned :class:`Validation` (one collapsed line in a notebook,
        :meth:`merges` for the table), not as warnings.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TaxonomyMergeWarning)
            summary = super().validate()
        return Validation(summary, self.merges())

    def merges(self) -> pd.DataFrame:
        """The category paths merged into another class (``path, count, resolved_to, resolved_count``)."""
        return self.taxonomy().merges()

    def taxonomy(self) -> Taxonomy:
        """The class set (see :meth:`Pipeline.taxonomy`); its merges are reported by :meth:`validate`
        and :meth:`merges`, not warned about."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TaxonomyMergeWarning)
            return super().taxonomy()

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Hash of everything that decides the data a model is trained on (for result caching)."""
        emb = self.embeddings(progress=False)
        c = self.config
        tax = self.taxonomy()
        key = {
            "catalog": c.to_dict()["catalog"], "options": c.catalog_options, "template": c.class_template,
            "k": c.k, "split": [c.split_seed, c.val, c.test]
            + ([c.min_count] if c.min_count != 3 else []) + ([c.sample, c.sample_seed] if c.sample else []),
            "taxonomy": None if c.taxonomy is None else hashlib.sha256("\n".join(tax.classes).encode()).hexdigest(),
            "ids": hashlib.sha256("\n".join(map(str, emb.item_ids)).encode()).hexdigest(),
            "enc": {m: (v or {}).get("fingerprint") for m, v in emb.meta.items() if m.endswith("_encoder")},
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ the comparison suite
    def suite(self, configs: dict | None = None, seeds=(0, 1, 2), epochs: int | None = None, crm_for="best",
              retrain: bool = False, progress: bool = True) -> "SuiteResult":
        """Train a comparison suite (default: :func:`semcat_kit.experiments.comparison.default_suite`) or reload it.

        Results are kept under ``work_dir/suites/<key>/`` where ``key`` hashes the data
        (:meth:`fingerprint`), the configurations and the seeds: the summary and per-seed tables
        (CSV), the test-set probabilities of every run (npz) and the first seed's head of every
        configuration (exported with :func:`semcat_kit.export_head`, with hedging thresholds calibrated
        on the validation split). A second call with the same
        inputs loads them instead of training.

        Every configuration's ``"auto"`` fields are decided for this split
        (:meth:`semcat_kit.Pipeline.train_config`); the configurations trained are in ``spec.json``
        and each head's export. ``epochs=None``: the budget the data decides.
        """
        from ..experiments.comparison import compare, default_suite
        from ..ship.export import export_head
        from .._core.io import atomic_dir

        if configs is None:
            configs = default_suite(epochs=epochs, k=self.config.k, device=self.config.device)
        # the "auto" fields decided for this split (what train() would decide), so spec.json says them
        configs = {n: self.train_config(c) for n, c in configs.items()}
        seeds = [int(s) for s in seeds]
        spec = {"data": self.fingerprint(), "seeds": seeds, "crm_for": crm_for,
                "configs": {n: c.to_dict() for n, c in configs.items()},
                "columns": TABLE_VERSION}   # what the tables hold: older folders are re-trained
        folder = self._result_folder("suites", spec)
        if folder.is_dir() and not retrain:
            return SuiteResult.load(folder)
        (tr, ytr), (va, yva), (te, yte) = self.part("train"), self.part("val"), self.part("test")
        summary = compare(configs, train=(tr, ytr), val=(va, yva), test=(te, yte), taxonomy=self.taxonomy(),
                          neighbors=self.neighbors(), seeds=seeds, crm_for=crm_for, progress=progress)
        runs = summary.attrs["runs"]
        with atomic_dir(folder) as tmp:
            summary.to_csv(tmp / "summary.csv")
            runs.long.to_csv(tmp / "long.csv", index=False)
            probs = {}
            for i, name in enumerate(configs):
                for seed in seeds:
                    probs[f"{i}:{seed}"] = runs[(name, seed)].predict_proba(te).astype(np.float32)
                export_head(runs[(name, seeds[0])], tmp / "heads" / f"{i:02d}", onnx=False, pt2=False,
                            metadata={"suite_config": name, "seed": seeds[0]},
                            hedging=(va, yva) if len(yva) else None)
                (tmp / "histories").mkdir(exist_ok=True)
                runs[(name, seeds[0])].history.to_csv(tmp / "histories" / f"{i:02d}.csv", index=False)
            np.savez_compressed(tmp / "test_probs.npz", y_test=yte, **probs)
            solvers = {name: getattr(runs[(name, seeds[0])], "solver", None) for name in configs}
            (tmp / "solvers.json").write_text(json.dumps(solvers, indent=1, default=str))
            (tmp / "spec.json").write_text(json.dumps({**spec, "names": list(configs)}, indent=1, default=str))
        return SuiteResult.load(folder)

    def _result_folder(self, kind: str, spec: dict) -> Path:
        """``work_dir/<kind>/<key>``: where a trained result of ``spec`` (data, configs, seeds) is kept."""
        key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return self.work_dir / kind / key

    def baselines(self, configs: dict | None = None, seeds=(0, 1, 2), crm_for=("LogisticRegression",),
                  retrain: bool = False, progress: bool = True) -> pd.DataFrame:
        """What a user would pick instead of a head, scored on the same split as :meth:`suite`.

        ``configs`` defaults to :func:`semcat_kit.experiments.comparison.baseline_suite` (a ``LogisticRegression``
        whose ``C`` is chosen on the validation split, and hiclass's classifier per parent node); a
        list picks some of those by name, a dict gives your own ``Baseline`` objects. ``crm_for``
        names the rows that also get a ``"+ CRM"`` row (names not among ``configs`` are ignored).
        Returns the :func:`compare` summary (same columns as ``suite(...).summary``), kept under ``work_dir/baselines/<key>/``
        (``key`` hashes the data, the baselines and the seeds) and reloaded on the next call. Each
        peer's first-seed test predictions are kept beside it: ``df.attrs["test_top1"]`` is
        ``{name: (N_test,) top-1 class index}`` and ``df.attrs["y_test"]`` the test labels (for paired
        comparisons with a head's :meth:`SuiteResult.test_probs`, without fitting the peer again).
        """
        from ..experiments.comparison import baseline_suite, compare
        from .._core.io import atomic_dir

        if configs is None or isinstance(configs, (list, tuple)):
            known = baseline_suite()
            names = list(known) if configs is None else list(configs)
            bad = [n for n in names if n not in known]
            if bad:
                raise ValueError(f"unknown peers {bad}: choose from {list(known)} (or pass a dict of Baselines)")
            configs = {n: known[n] for n in names}
        if not configs:
            raise ValueError("no peers to fit: pass their names, e.g. ['LogisticRegression']")
        seeds = [int(s) for s in seeds]
        crm = [crm_for] if isinstance(crm_for, str) else list(crm_for or [])
        crm = [n for n in crm if n in configs]
        spec = {"data": self.fingerprint(), "seeds": seeds, "crm_for": crm,
                "configs": {n: repr(c) for n, c in configs.items()}, "columns": TABLE_VERSION}
        folder = self._result_folder("baselines", spec)
        if not ((folder / "summary.csv").is_file() and not retrain):
            (tr, ytr), (va, yva), (te, yte) = self.part("train"), self.part("val"), self.part("test")
            summary = compare(configs, train=(tr, ytr), val=(va, yva), test=(te, yte), taxonomy=self.taxonomy(),
                              neighbors=self.neighbors(), seeds=seeds, crm_for=crm or None, progress=progress)
            runs = summary.attrs["runs"]
            with atomic_dir(folder) as tmp:
                summary.to_csv(tmp / "summary.csv")
                top1 = {f"{i}": runs.test_top1[(name, seeds[0])] for i, name in enumerate(configs)}
                np.savez_compressed(tmp / "test_top1.npz", y_test=np.asarray(yte), **top1)
                (tmp / "spec.json").write_text(json.dumps({**spec, "names": list(configs)}, indent=1, default=str))
        out = read_csv(folder / "summary.csv", what="baselines summary", index_col="config")
        if (folder / "test_top1.npz").is_file():
            names = json.loads((folder / "spec.json").read_text()).get("names", list(configs))
            with np.load(folder / "test_top1.npz") as z:
                out.attrs["y_test"] = z["y_test"]
                out.attrs["test_top1"] = {name: z[f"{i}"] for i, name in enumerate(names)}
        return out


@dataclass
class SuiteResult:
    """A trained comparison suite as stored by :meth:`Workspace.suite`.

    Attributes
    ----------
    summary : DataFrame
        One row per configuration (``<metric>_mean`` / ``_std`` over seeds), CRM rows included.
    long : DataFrame
        One row per (configuration, seed).
    names : list[str]
        Configuration names in training order.
    seeds : list[int]
    y_test : ndarray
        Test-split class indices (the rows of :meth:`test_probs`).
    """

    folder: Path
    summary: pd.DataFrame
    long: pd.DataFrame
    names: list
    seeds: list
    y_test: np.ndarray

    @classmethod
    def load(cls, folder: str | Path) -> "SuiteResult":
        folder = Path(folder)
        spec = json.loads((folder / "spec.json").read_text())
        with np.load(folder / "test_probs.npz") as z:
            y = z["y_test"]
        return cls(folder, read_csv(folder / "summary.csv", what="suite summary", index_col="config"),
                   read_csv(folder / "long.csv", what="suite table"), spec["names"], spec["seeds"], y)

    def _pos(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"{name!r} is not a configuration of this suite; choose from {self.names}")
        return self.names.index(name)

    def test_probs(self, name: str, seed: int | None = None) -> np.ndarray:
        """(N_test, C) probabilities of configuration ``name`` (first seed by default)."""
        seed = self.seeds[0] if seed is None else seed
        with np.load(self.folder / "test_probs.npz") as z:
            return z[f"{self._pos(name)}:{seed}"]

    def config(self, name: str):
        """The :class:`~semcat_kit.TrainConfig` configuration ``name`` was trained with, as the suite
        ran it (the data-aware defaults of its split filled in; every field explicit), so
        ``Pipeline.train(result.config(name))`` retrains exactly that run."""
        from ..learn.config import TrainConfig

        spec = json.loads((self.folder / "spec.json").read_text())
        self._pos(name)
        return TrainConfig.from_dict(spec["configs"][name])

    def head_dir(self, name: str) -> Path:
        """Export folder of the first seed's head of configuration ``name``."""
        return self.folder / "heads" / f"{self._pos(name):02d}"

    def head(self, name: str, backend: str = "torch"):
        """The first seed's head of ``name`` reloaded with :func:`semcat_kit.load_head`."""
        from ..ship.export import load_head

        return load_head(self.head_dir(name), backend=backend)

    def history(self, name: str) -> pd.DataFrame:
        """Per-epoch training history of the first seed's run of ``name``."""
        return read_csv(self.folder / "histories" / f"{self._pos(name):02d}.csv", what="training history")

    def solver(self, name: str) -> dict:
        """How the first seed's run of ``name`` was fitted (:attr:`semcat_kit.TrainRun.solver`):
        ``method`` (``"lbfgs"``: full-batch to convergence; ``"minibatch"``), ``why`` (the reason
        ``solver="auto"`` chose it, e.g. the table's size), and for ``lbfgs`` the ``C`` kept, its
        L-BFGS ``iterations``, ``converged``, ``threads`` and the number of heads ``stacked_with`` it."""
        self._pos(name)
        path = self.folder / "solvers.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: this suite folder predates solver records; "
                                    "train it again (Workspace.suite(..., retrain=True))")
        info = json.loads(path.read_text()).get(name)
        if info is None:
            raise KeyError(f"no solver record for {name!r} in {path}")
        return info

    def chosen_C(self, name: str) -> float | None:
        """The ``C`` (LogisticRegression's inverse L2 strength) the first seed's run of ``name`` kept:
        the one that validated best along its C walk (``solver="lbfgs"``); ``None`` for a minibatch
        run, which has no C. ``TrainConfig(C=result.chosen_C(name))`` fits that strength alone, without
        the walk (e.g. a cross-validation's folds)."""
        h = self.history(name)
        if "C" not in h.columns:
            return None
        crm = self.long["crm"].astype(str).str.lower() == "true"
        row = self.long[(self.long["config"] == name) & (self.long["seed"] == self.seeds[0]) & ~crm]
        epoch = int(row["best_epoch"].iloc[0])
        return float(h.loc[h["epoch"] == epoch, "C"].iloc[0])

    def best(self, metric: str = "top1") -> str:
        """Name of the (non-CRM) configuration with the best mean ``metric``."""
        col = f"{metric}_mean"
        rows = self.summary.loc[[n for n in self.names if n in self.summary.index]]
        from ..judge.metrics import lower_is_better

        return str(rows[col].idxmin() if lower_is_better(metric) else rows[col].idxmax())
