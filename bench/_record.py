"""``--record FILE``: keep what a benchmark printed, with the command, the machine and the load, as a
markdown record under ``docs/bench/`` (written atomically when the run ends). The README points at
these records instead of quoting figures by hand."""
from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


@contextlib.contextmanager
def recording(path: str | None, title: str):
    """Print as usual; with ``path``, also write everything printed to that markdown file at the end."""
    if not path:
        yield
        return
    buf = io.StringIO()
    started, load0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buf)):
        yield
    load1 = os.getloadavg()
    sys.path.insert(0, str(ROOT))
    from semcat_kit._core.io import atomic_write_text

    cmd = " ".join(["python", str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                    and ROOT in Path(sys.argv[0]).parents else sys.argv[0], *sys.argv[1:]])
    text = (f"# {title}\n\nWritten by `{cmd}` on {started}; {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
            f"load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end (1 min; 5 min: {load1[1]:.2f}).\n\n"
            "```\n" + buf.getvalue().rstrip() + "\n```\n")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
