"""Run by tests/test_distributed.py: the same training on 1 process or under torchrun (gloo)."""
import os
import sys

import numpy as np
import torch

import semcat_kit as sk
from semcat_kit import distributed

distributed.init_from_env()
out = sys.argv[1]
paths = [f"Top{i // 4} > Leaf{i}" for i in range(8)]
tax = sk.Taxonomy.from_paths(paths)
rng = np.random.default_rng(0)
y = np.repeat(np.arange(8), 32)                       # 256 rows: 8 global batches of 32
if os.environ.get("SEMCAT_DDP_ROWS"):                  # e.g. 33: a last global batch of 1 row for 2 ranks
    y = np.arange(int(os.environ["SEMCAT_DDP_ROWS"])) % 8
centers = rng.normal(size=(8, 12))
emb = (centers[y] + 0.5 * rng.normal(size=(len(y), 12))).astype(np.float32)
yv = np.repeat(np.arange(8), 4)
vemb = (centers[yv] + 0.5 * rng.normal(size=(len(yv), 12))).astype(np.float32)
nb = sk.similarity.label_neighbors(centers.astype(np.float32), k=3)
cfg = sk.TrainConfig(epochs=3, proj_dim=16, hidden=32, batch_size=32, lr=3e-3, device="cpu", dropout=0.0,
                     modality_dropout=0.0, smoothing="semantic", k=3, early_stopping="val_top1", patience=5,
                     solver="minibatch")          # the same loop on 1 process and under torchrun
run = sk.train(emb, y, taxonomy=tax, neighbors=nb, config=cfg, val=(vemb, yv), progress=False,
               checkpoint_dir=sys.argv[2] if len(sys.argv) > 2 else None)
if distributed.is_main():
    torch.save({"state": run.model.state_dict(), "history": run.history.to_dict("list"),
                "world": distributed.world_size(), "best_epoch": run.best_epoch}, out)
distributed.shutdown()
