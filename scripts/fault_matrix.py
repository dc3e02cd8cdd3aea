"""The fault and bad-input matrix of issue 25: every command and public entry point against bad
files, killed processes, full and read-only disks and ranks that disagree, run as a new user would.

Each case passes when the fault is either refused with one clear error (the right exception type, or
exit status 1 and one ``semcat: error:`` line, naming the file / column / folder) or handled with
nothing lost and reported. Prints one line per case and the totals.

    PYTHONPATH=. python scripts/fault_matrix.py [--only SUBSTRING] [--no-torchrun]

Full and read-only disks are small tmpfs mounts (root only: root ignores chmod); without the right to
mount, those cases are counted as skipped. A few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import semcat_kit as sk  # noqa: E402
from semcat_kit import cli  # noqa: E402
from semcat_kit import datasets as D  # noqa: E402
from semcat_kit.encode.encoders import HashingTextEncoder  # noqa: E402

CASES: list = []


class Skip(Exception):
    pass


def case(group: str, name: str):
    def deco(f):
        CASES.append((group, name, f))
        return f
    return deco


# ------------------------------------------------------------------------------ helpers
def expect_error(fn, types, *needles):
    """Passes when ``fn()`` raises one of ``types`` whose message holds every needle."""
    try:
        fn()
    except types as e:
        msg = str(e)
        missing = [n for n in needles if n not in msg]
        return (not missing), (msg[:160] if not missing else f"message lacks {missing}: {msg[:160]}")
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__} (expected {types}): {str(e)[:160]}"
    return False, "no error (silently accepted)"


def run_cli(argv, *needles):
    """``semcat ARGV`` in-process: passes on exit 1 with one ``semcat: error:`` line holding every needle."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
        except Exception:  # noqa: BLE001
            return False, "traceback: " + traceback.format_exc().splitlines()[-1][:160]
    lines = [l for l in err.getvalue().splitlines() if l.startswith("semcat")]
    if rc == 0:
        return False, "exit 0"
    if len(lines) != 1 or "Traceback" in err.getvalue():
        return False, f"exit {rc}, {len(lines)} error line(s): {err.getvalue()[-200:]}"
    missing = [n for n in needles if n not in lines[0]]
    return (rc == 1 and not missing), (lines[0][:160] if not missing else f"lacks {missing}: {lines[0][:160]}")


@contextlib.contextmanager
def tmpfs(path: Path, size="64k", ro=False):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if ro else ""), "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode:
        raise Skip(f"cannot mount a tmpfs ({r.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def catalog_csv(path: Path, n=40, dim_title=""):
    pd.DataFrame({"id": [f"p{k}" for k in range(n)], "title": [f"toy {k} {dim_title}" for k in range(n)],
                  "cat": [f"A > B{k % 3}" for k in range(n)]}).to_csv(path, index=False)
    return path


def config(path: Path, enc="hash-text:32"):
    return write(path, f"text_encoder: {enc}\nimage_encoder: null\ncatalog:\n  path_col: cat\n"
                       "train:\n  epochs: 1\n  device: cpu\n  smoothing: tree\n")


def frame(n=40):
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "title": [f"red shirt {k}" for k in range(n)],
                         "image_path": [None] * n})


# ------------------------------------------------------------------------------ bad files: CSV
BAD_CSV = {
    "unclosed quote": ('id,title,cat\n1,"shirt,A\n2,jeans,B\n3,"hat",C\n', "not closed properly"),
    "quote open to EOF": ('id,title,cat\n1,shirt,A\n2,"jeans,B\n3,hat,C\n', "never closed"),
    "too few fields": ('id,title,image,cat\n1,shirt,a.jpg,A\n2,b.jpg,B\n', "fewer fields"),
    "non-UTF-8": ("id,title,cat\n1,caf\xe9,A\n".encode("latin-1"), "not UTF-8"),
    "duplicate header": ("id,title,title,cat\n1,a,b,A\n", "more than once"),
    "empty file": ("", "empty"),
    "NUL in an id": (b"id,title,cat\n7,a,A\n7\x00,b,B\n", "NUL"),
}


def _csv_cases():
    for label, (text, needle) in BAD_CSV.items():
        def load(tmp, text=text, needle=needle):
            p = write(tmp / "c.csv", text)
            return expect_error(lambda: D.load_catalog(p, path_col="cat"), ValueError, needle)

        def chunks(tmp, text=text, needle=needle):
            p = write(tmp / "c.csv", text)
            return expect_error(lambda: list(D.load_catalog_chunks(p, chunk_size=1, path_col="cat")), ValueError, needle)

        def encode(tmp, text=text, needle=needle):
            t = text.replace("id,", "item_id,", 1) if isinstance(text, str) else text.replace(b"id,", b"item_id,", 1)
            p = write(tmp / "c.csv", t)
            return expect_error(lambda: sk.encode_catalog(p, text_encoder=HashingTextEncoder(8), progress=False),
                                ValueError, needle)

        def predict(tmp, text=text, needle=needle):
            p = write(tmp / "p.csv", text)
            return run_cli(["predict", "--model", str(tmp / "nohead"), "--input", str(p), "--output",
                            str(tmp / "o.csv")], needle)

        def train_cmd(tmp, text=text, needle=needle):
            p = write(tmp / "c.csv", text)
            return run_cli(["train", "--catalog", str(p), "--config", str(config(tmp / "c.yaml")), "--out",
                            str(tmp / "head")], needle)

        def encode_cmd(tmp, text=text, needle=needle):
            p = write(tmp / "c.csv", text)
            return run_cli(["encode", "--catalog", str(p), "--config", str(config(tmp / "c.yaml")), "--cache-dir",
                            str(tmp / "cache"), "--quiet"], needle)

        for name, f in (("load_catalog", load), ("load_catalog_chunks", chunks), ("encode_catalog(path)", encode),
                        ("semcat predict", predict), ("semcat train", train_cmd), ("semcat encode", encode_cmd)):
            if label == "NUL in an id" and name == "encode_catalog(path)":
                continue   # encode_catalog's ids: covered by compact_ids below
            case("bad file", f"{label}: {name}")(f)


_csv_cases()


@case("bad file", "NUL in an id: Embeddings / compact_ids")
def _(tmp):
    return expect_error(lambda: sk.Embeddings(np.array(["7", "7\x00"], dtype=object), np.zeros((2, 4), np.float32),
                                              None, np.ones(2, bool), np.zeros(2, bool)), ValueError, "NUL")


@case("bad file", "ids with spaces kept verbatim (no collision)")
def _(tmp):
    p = write(tmp / "c.csv", "id,title,cat\n 8 ,a,A\n8,b,B\n")
    ids = D.load_catalog(p, path_col="cat")["item_id"].tolist()
    return ids == [" 8 ", "8"], f"ids {ids!r}"


@case("bad file", "truncated Parquet catalog")
def _(tmp):
    p = tmp / "c.parquet"
    frame().to_parquet(p)
    p.write_bytes(p.read_bytes()[:100])
    return expect_error(lambda: D.load_catalog(p, path_col="title", id="item_id"), ValueError, "c.parquet")


@case("bad file", "taxonomy= a folder")
def _(tmp):
    (tmp / "tax").mkdir()
    df = pd.DataFrame({"id": ["1", "2"], "title": ["a", "b"], "cat": ["A > B", "A > C"]})
    return expect_error(lambda: D.load_catalog(df, path_col="cat", taxonomy=tmp / "tax"), ValueError, "is a folder")


@case("bad file", "truncated training checkpoint")
def _(tmp):
    from semcat_kit.learn.training import load_checkpoint

    write(tmp / "last.pt", b"PK\x03\x04garbage")
    return expect_error(lambda: load_checkpoint(tmp), ValueError, "last.pt")


@case("bad file", "malformed --expected-sha256")
def _(tmp):
    (tmp / "head").mkdir()
    p = write(tmp / "p.csv", "id,title\n1,a\n")
    return run_cli(["predict", "--model", str(tmp / "head"), "--input", str(p), "--output", str(tmp / "o.csv"),
                    "--expected-sha256", "abc"], "is not a sha256")


@case("bad file", "misspelled objective metric (before reading)")
def _(tmp):
    return run_cli(["tune", "--catalog", str(tmp / "none.csv"), "--config", str(tmp / "none.yaml"), "--out",
                    str(tmp / "o"), "--objective", "hdsit@5"], "did you mean 'hdist@5'")


# ------------------------------------------------------------------------------ bad files: the store
def _store(root, n=64, dim=8, dtype=None):
    from semcat_kit.encode.store import VectorStore, content_key

    s = VectorStore(root, dim, dtype=dtype, auto_merge=False)
    keys = [content_key(f"k{i}") for i in range(n)]
    s.put(keys, np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32))
    s.flush()
    return s, keys


def _fresh():
    import semcat_kit.encode.store as m

    m.forget_verified()


@case("bad file", "store shard with flipped bits")
def _(tmp):
    from semcat_kit.encode.store import VectorStore

    s, keys = _store(tmp / "s")
    p = s.shard_files[0]
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 1
    p.write_bytes(bytes(b))
    _fresh()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = VectorStore(tmp / "s", 8)
    return bool(t.corrupt) and any("corrupt" in str(x.message) for x in w), f"corrupt={len(t.corrupt)}"


@case("bad file", "store shard edited in place, same size/mtime/inode")
def _(tmp):
    from semcat_kit.encode.store import VectorStore

    s, keys = _store(tmp / "s")
    p = s.shard_files[0]
    st = p.stat()
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 1
    with open(p, "r+b") as f:
        f.write(b)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    _fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = VectorStore(tmp / "s", 8)
    return bool(t.corrupt), f"corrupt={len(t.corrupt)}"


@case("bad file", "unlisted foreign store shard")
def _(tmp):
    from semcat_kit.encode.store import VectorStore

    s, keys = _store(tmp / "s")
    shutil.copy(s.shard_files[0], tmp / "s" / "shard-x-0123456789abcdef.arrow")
    _fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = VectorStore(tmp / "s", 8)
    return len(t.shard_files) == 1 and len(t.corrupt) == 1, f"shards={len(t.shard_files)} set aside={len(t.corrupt)}"


@case("bad file", "float16 store read by a default reader")
def _(tmp):
    from semcat_kit import encode_into_store

    enc = HashingTextEncoder(16)
    encode_into_store(frame(), text_encoder=enc, cache_dir=tmp, store_dtype="float16", progress=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        r = encode_into_store(frame(), text_encoder=enc, cache_dir=tmp, progress=False)
    bad = [str(x.message) for x in w if "corrupt" in str(x.message)]
    return r.stats["text_encoded"] == 0 and not bad, f"re-encoded {r.stats['text_encoded']}, warnings {bad[:1]}"


# ------------------------------------------------------------------------------ checkpoints
def _toy():
    tax = sk.Taxonomy.from_paths([f"T{i // 2} > L{i}" for i in range(4)])
    y = np.repeat(np.arange(4), 10)
    x = (np.eye(4, 8)[y] + 0.1 * np.random.default_rng(0).normal(size=(40, 8))).astype(np.float32)
    return tax, x, y


@case("bad file", "train(resume=A, checkpoint_dir=B of another run)")
def _(tmp):
    from semcat_kit.learn.training import TrainConfig, train

    tax, x, y = _toy()
    cfg = TrainConfig(epochs=1, device="cpu", smoothing="tree", early_stopping=None)
    train(x, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp / "A", progress=False)
    train(x, y, taxonomy=tax, config=cfg.replace(lr=0.01), checkpoint_dir=tmp / "B", progress=False)
    before = (tmp / "B" / "last.pt").read_bytes()
    ok, msg = expect_error(lambda: train(x, y, taxonomy=tax, resume=tmp / "A", checkpoint_dir=tmp / "B",
                                         progress=False), ValueError, "would replace it")
    return ok and (tmp / "B" / "last.pt").read_bytes() == before, msg


@case("bad file", "resume with another taxonomy")
def _(tmp):
    from semcat_kit.learn.training import TrainConfig, train

    tax, x, y = _toy()
    train(x, y, taxonomy=tax, config=TrainConfig(epochs=1, device="cpu", smoothing="tree"), checkpoint_dir=tmp,
          progress=False)
    other = sk.Taxonomy.from_paths(list(tax.classes) + ["T9 > L9"])
    return expect_error(lambda: train(x, y, taxonomy=other, resume=tmp, progress=False), ValueError, "taxonomy has 5")


# ------------------------------------------------------------------------------ killed processes
def _spawn(argv, tmp):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "semcat_kit", *argv], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@case("killed process", "semcat encode SIGKILLed mid-run, then re-run")
def _(tmp):
    csv = catalog_csv(tmp / "c.csv", n=20000)
    argv = ["encode", "--catalog", str(csv), "--config", str(config(tmp / "c.yaml", "hash-text:64")), "--cache-dir",
            str(tmp / "cache"), "--chunk-size", "500", "--quiet"]
    p = _spawn(argv, tmp)
    t0 = time.time()
    while time.time() - t0 < 120 and not list((tmp / "cache").rglob("shard-*.arrow")):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = list((tmp / "cache").rglob(".shard-*.tmp"))
    q = _spawn(argv, tmp)
    out, err = q.communicate(timeout=300)
    import re

    m = re.search(r"encoded text (\d+)", out)
    n = int(m.group(1)) if m else -1
    return q.returncode == 0 and 0 <= n < 20000, f"re-run exit {q.returncode}, encoded {n} of 20000 again, " \
                                                 f"{len(left)} temp file(s) after the kill"


@case("killed process", "training killed (exception) then resumed: identical weights")
def _(tmp):
    import torch

    from semcat_kit import trainer as T
    from semcat_kit.learn.training import TrainConfig, train

    tax, x, y = _toy()
    cfg = TrainConfig(epochs=3, device="cpu", smoothing="tree", early_stopping=None, checkpoint_every=1)
    full = train(x, y, taxonomy=tax, config=cfg, progress=False)

    class Kill(T.Callback):
        order = 10_000                           # after the checkpoint of the epoch: killed between epochs

        def on_epoch_end(self, t):
            if t.epoch == 1:
                raise KeyboardInterrupt

    try:
        train(x, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp, progress=False, callbacks=[Kill()])
    except KeyboardInterrupt:
        pass
    again = train(x, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp, resume=tmp, progress=False)
    same = all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), again.model.state_dict().values()))
    return same, "bit-identical" if same else "weights differ"


# ------------------------------------------------------------------------------ full and read-only disks
@case("full disk", "encode_catalog(out=) on a full disk")
def _(tmp):
    with tmpfs(tmp / "m") as m:
        ok, msg = expect_error(lambda: sk.encode_catalog(frame(600), text_encoder=HashingTextEncoder(256),
                                                         out=m / "emb", progress=False), OSError, str(m))
        return ok and not list(m.iterdir()), msg


@case("full disk", "Embeddings.save(folder) of a store view on a full disk")
def _(tmp):
    view = sk.encode_catalog(frame(600), text_encoder=HashingTextEncoder(256), cache_dir=tmp / "c", view=True,
                             progress=False)
    with tmpfs(tmp / "m") as m:
        ok, msg = expect_error(lambda: view.save(m / "emb"), OSError, str(m))
        return ok and not list(m.iterdir()), msg


@case("full disk", "semcat encode --out on a full disk")
def _(tmp):
    csv = catalog_csv(tmp / "c.csv", n=600)
    with tmpfs(tmp / "m") as m:
        return run_cli(["encode", "--catalog", str(csv), "--config", str(config(tmp / "c.yaml", "hash-text:256")),
                        "--cache-dir", str(tmp / "cache"), "--out", str(m / "emb"), "--quiet"], str(m))


@case("full disk", "semcat encode, the store fills the disk")
def _(tmp):
    csv = catalog_csv(tmp / "c.csv", n=600)
    with tmpfs(tmp / "m") as m:
        return run_cli(["encode", "--catalog", str(csv), "--config", str(config(tmp / "c.yaml", "hash-text:256")),
                        "--cache-dir", str(m / "cache"), "--quiet"], "could not be written")


@case("full disk", "semcat predict --output on a full disk")
def _(tmp):
    csv = catalog_csv(tmp / "c.csv", n=90)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(["train", "--catalog", str(csv), "--config", str(config(tmp / "c.yaml")), "--out",
                       str(tmp / "head"), "--quiet"])
    if rc != 0:
        return False, f"could not train the head for this case: {err.getvalue()[-160:]}"
    big = pd.DataFrame({"id": [f"q{k}" for k in range(3000)], "title": [f"toy number {k}" for k in range(3000)]})
    big.to_csv(tmp / "p.csv", index=False)
    with tmpfs(tmp / "m", size="16k") as m:
        ok, msg = run_cli(["predict", "--model", str(tmp / "head"), "--input", str(tmp / "p.csv"), "--output",
                           str(m / "o.csv"), "--quiet"], "o.csv")
        return ok and not list(m.iterdir()), msg


@case("full disk", "train checkpoint_dir on a full disk")
def _(tmp):
    from semcat_kit.learn.training import TrainConfig, train

    tax, x, y = _toy()
    with tmpfs(tmp / "m", size="4k") as m:
        ok, msg = expect_error(lambda: train(x, y, taxonomy=tax, config=TrainConfig(epochs=1, device="cpu",
                                                                                    smoothing="tree"),
                                             checkpoint_dir=m / "ck", progress=False), (OSError, RuntimeError),
                               str(m))
        return ok and not [p for p in m.rglob("*") if p.is_file()], msg


@case("read-only disk", "semcat encode --cache-dir read-only")
def _(tmp):
    csv = catalog_csv(tmp / "c.csv")
    with tmpfs(tmp / "m", ro=True) as m:
        return run_cli(["encode", "--catalog", str(csv), "--config", str(config(tmp / "c.yaml")), "--cache-dir",
                        str(m / "cache"), "--quiet"], "cannot be written")


@case("read-only disk", "encode_catalog(cache_dir=) read-only: vectors still returned, reported")
def _(tmp):
    with tmpfs(tmp / "m", ro=True) as m:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            e = sk.encode_catalog(frame(), text_encoder=HashingTextEncoder(8), cache_dir=m / "c", progress=False)
        said = any("cannot be written" in str(x.message) for x in w)
        return bool(e.text_mask.all()) and said, f"rows {int(e.text_mask.sum())}, warned {said}"


@case("read-only disk", "train checkpoint_dir read-only (before epoch 1)")
def _(tmp):
    from semcat_kit.learn.training import TrainConfig, train

    tax, x, y = _toy()
    with tmpfs(tmp / "m", ro=True) as m:
        return expect_error(lambda: train(x, y, taxonomy=tax, config=TrainConfig(epochs=1, device="cpu",
                                                                                 smoothing="tree"),
                                          checkpoint_dir=m / "ck", progress=False), (OSError, RuntimeError), str(m))


# ------------------------------------------------------------------------------ ranks that disagree
def _torchrun(script: Path, *args, tmp):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), *map(str, args)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp)


@case("ranks", "torchrun semcat encode, ranks read catalogs in another order")
def _(tmp):
    rows = [f"p{k}" for k in range(12)]
    for r, ids in enumerate((rows, rows[::-1])):
        pd.DataFrame({"id": ids, "title": ids, "cat": ["A > B"] * 12}).to_csv(tmp / f"c{r}.csv", index=False)
    write(tmp / "c.yaml", "catalog:\n  path_col: cat\n")
    r = _torchrun(ROOT / "tests" / "_encode_ranks_case.py", tmp, tmp=tmp)
    ours = [l for l in r.stderr.splitlines() if l.startswith("semcat")]
    return r.returncode != 0 and len(ours) == 1 and "different catalogs" in ours[0], (ours[0][:160] if ours else
                                                                                      r.stderr[-160:])


@case("ranks", "encode_distributed: ranks in another order / unshared store")
def _(tmp):
    r = _torchrun(ROOT / "tests" / "_dist_refuse_case.py", tmp, tmp=tmp)
    res = [json.loads((tmp / f"r{k}.json").read_text()) for k in range(2) if (tmp / f"r{k}.json").exists()]
    ok = len(res) == 2 and all(v != "no error" for d in res for v in d.values())
    return ok, "; ".join(f"{k}: {v[:60]}" for d in res[:1] for k, v in d.items()) or r.stderr[-160:]


# ------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run the cases whose name holds this text")
    ap.add_argument("--no-torchrun", action="store_true", help="skip the multi-process cases")
    args = ap.parse_args()
    totals = {"pass": 0, "FAIL": 0, "skip": 0}
    by_group: dict = {}
    for group, name, f in CASES:
        if args.only and args.only not in f"{group}: {name}":
            continue
        if args.no_torchrun and group == "ranks":
            continue
        tmp = Path(tempfile.mkdtemp(prefix="fault_"))
        try:
            ok, detail = f(tmp)
            status = "pass" if ok else "FAIL"
        except Skip as e:
            status, detail = "skip", str(e)
        except Exception as e:  # noqa: BLE001 - a crash of the case is a failure of the guarantee
            status, detail = "FAIL", f"{type(e).__name__}: {str(e)[:160]}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        totals[status] += 1
        by_group.setdefault(group, {"pass": 0, "FAIL": 0, "skip": 0})[status] += 1
        print(f"{status:4s}  {group:14s}  {name:62s}  {detail}", flush=True)
    print()
    for g, t in by_group.items():
        print(f"{g:14s}: {t['pass']} pass, {t['FAIL']} fail, {t['skip']} skipped")
    print(f"TOTAL: {sum(totals.values())} cases, {totals['pass']} pass, {totals['FAIL']} fail, {totals['skip']} skipped")
    return 1 if totals["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
