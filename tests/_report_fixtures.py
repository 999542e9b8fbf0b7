"""Shared helpers of the progress, status and report tests: small real runs, PNG checks, headless Chromium.

Import what you need:
    from _report_fixtures import TINY_CONFIG, launch, png_size, chromium, ...
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mpimager.rundir.journal import read_records

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Small, fast WSClean jobs on tiny MSs: two passes, so 3 MSs make 6 jobs for 2 workers.
TINY_CONFIG = """
[worker]
max_concurrent = 2
[wsclean]
size = "64 64"
scale = "20asec"
niter = 10
[passes.I]
pol = "I"
[passes.V]
pol = "V"
"""


def launch(config, inputs, run_dir, ranks=3, env=None) -> subprocess.Popen:
    """mpimager under `mpirun -n RANKS` in its own session (a test can SIGKILL the whole run), stdout piped."""
    cmd = ["mpirun", "-n", str(ranks), sys.executable, "-m", "mpimager", str(config), *map(str, inputs),
           "--run-dir", str(run_dir)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def session_members(sid: int) -> list[int]:
    """Pids of the processes of session `sid` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def kill_session(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGKILL every process of the session `proc` leads (started with start_new_session=True), and wait until
    none is left. Open MPI puts each rank in its own process group, so killing mpirun's group is not enough."""
    deadline = time.time() + timeout
    while True:
        members = [p for p in session_members(proc.pid) if p != os.getpid()]
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(timeout=timeout)
        if not [p for p in session_members(proc.pid) if _alive(p)]:
            return
        if time.time() > deadline:
            raise TimeoutError(f"processes of session {proc.pid} survive SIGKILL")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2:].split()[0] != "Z"


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 300.0, step: float = 0.01) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(step)
    return False


def open_jobs(run_dir) -> tuple[set[str], set[str]]:
    """(jobs ended ok, jobs started and not ended) so far in the journal."""
    records = read_records(run_dir)
    ended_ok = {r["job"] for r in records if r["event"] == "end" and r["status"] == "ok"}
    ended = {r["job"] for r in records if r["event"] == "end"}
    started = {r["job"] for r in records if r["event"] == "start"}
    return ended_ok, started - ended


# ------------------------------------------------------------------------------------------------ PNGs


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; AssertionError if the file is not a PNG."""
    data = Path(path).read_bytes()[:33]
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def png_pixels(path) -> np.ndarray:
    """RGB(A) floats in [0, 1], rows from the top (matplotlib's PNG reader)."""
    import matplotlib.image

    return matplotlib.image.imread(str(path))


def luminance(rgb: np.ndarray) -> np.ndarray:
    return 0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2]


def assert_not_blank(path, min_std: float = 0.02) -> None:
    pixels = png_pixels(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50, path
    assert float(np.std(luminance(pixels))) > min_std, f"{path} is blank"


# ------------------------------------------------------------------------------------------------ matplotlib


def env_without_matplotlib(directory: Path) -> dict:
    """An environment whose Python cannot import matplotlib (a sitecustomize refuses it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys

        class _NoMatplotlib:
            def find_spec(self, name, path=None, target=None):
                if name == "matplotlib" or name.startswith("matplotlib."):
                    raise ImportError("matplotlib is blocked for this test")
                return None

        sys.meta_path.insert(0, _NoMatplotlib())
        """))
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{directory}{os.pathsep}{path}" if path else str(directory)}


# ------------------------------------------------------------------------------------------------ Chromium

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium():
    """The Debian `chromium` binary (apt-get install chromium), or skip."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian package `chromium`: apt-get install chromium)")
    return binary


def screenshot(chromium_binary: str, url: str, out_png: Path, profile: Path, size=(1280, 2000)) -> str:
    """Render `url` headless into `out_png`; return Chromium's stderr (console messages are logged there)."""
    r = subprocess.run([chromium_binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out_png}",
                        f"--window-size={size[0]},{size[1]}", "--enable-logging=stderr", "--v=0", url],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stderr


IMAGE_CHECK_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<iframe id="f" src="{src}" width="1280" height="1000"></iframe><pre id="out">not loaded</pre>
<script>
document.getElementById("f").addEventListener("load", function () {{
  var imgs = Array.from(this.contentDocument.images);
  var broken = imgs.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }})
                   .map(function (i) {{ return i.getAttribute("src"); }});
  document.getElementById("out").textContent = "IMAGES " + imgs.length + " BROKEN " + JSON.stringify(broken);
}});
</script></body></html>
"""


def images_loaded(chromium_binary: str, page: Path, work: Path) -> tuple[int, list[str]]:
    """(images on the page, those Chromium could not load): the page inside a checking frame, DOM dumped."""
    import json
    import re

    checker = page.parent / f".imagecheck-{os.getpid()}.html"
    checker.write_text(IMAGE_CHECK_PAGE.format(src=page.name))
    try:
        r = subprocess.run([chromium_binary, *CHROMIUM_FLAGS, f"--user-data-dir={work}",
                            "--allow-file-access-from-files", "--virtual-time-budget=20000", "--dump-dom",
                            checker.as_uri()], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        checker.unlink()
    m = re.search(r"IMAGES (\d+) BROKEN (\[.*?\])</pre>", r.stdout)
    assert m, f"the checking page did not run: {r.stdout[-1000:]} {r.stderr[-1000:]}"
    return int(m.group(1)), json.loads(m.group(2).replace("&quot;", '"'))
