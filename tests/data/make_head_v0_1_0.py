"""How tests/data/head_v0_1_0 was made: a small head exported by semcat_kit 0.1.0 BEFORE issue 24 (TorchScript +
legacy ONNX, the old export_head signature). Kept as a record; it runs only against that version of the code.

Usage (then): python tests/data/make_head_v0_1_0.py tests/data/head_v0_1_0
"""
import numpy as np, torch, sys
import semcat_kit as sk
from semcat_kit.encode.encoders import load as load_enc
torch.manual_seed(0)
cat = sk.datasets.load_fashion_tutorial()
cat = cat[cat["label"].notna()]
top = cat["label"].value_counts().index[:6]
cat = cat[cat["label"].isin(top)].groupby("label").head(20).reset_index(drop=True)
tax = sk.Taxonomy.from_paths(cat["label"], sep=" > ")
enc = load_enc("hash-text:32")
emb = sk.encode_catalog(cat[["item_id", "title"]], text_encoder=enc, progress=False)
cfg = sk.TrainConfig(epochs=60, hidden=16, proj_dim=16, device="cpu", early_stopping=None, batch_size=32)
run = sk.train(emb, cat["label"], taxonomy=tax, config=cfg, progress=False)
sk.export_head(run, sys.argv[1], onnx=True, torchscript=True, metadata={"note": "exported by semcat_kit 0.1.0 before issue 24 (TorchScript + legacy ONNX); kept to test that old heads still load"})
cat[["item_id", "title", "label"]].to_csv(sys.argv[1] + "_products.csv", index=False)
np.save(sys.argv[1] + "_logits.npy", run.predict_logits(emb).astype(np.float32))
