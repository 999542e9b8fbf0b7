"""What WSClean's own output says about a run: divergence, I/O failures, the error line of a failed run.

`wsclean_watcher(argv)` is the line watcher `mpimager.runtime.process.run` calls for every line of a WSClean
run; it raises `Divergence` or `IOFailure` (both `WatchAbort`s), which stops the run. `image_divergence`
looks at a finished run's images. `error_line` picks the line that says why a failed run failed.

Divergence, from the run's own numbers (documented rules; each constant below is one of them):
- a deconvolution peak of `DIVERGENCE_JY` (1 kJy) or more, or NaN/inf (what Arrakis catches as "KJy");
- the peak growing across major cycles: within one deconvolution (WSClean's "== Deconvolving (1) ==" starts
  one: per polarisation or channel when they are not joined), a peak more than `GROWTH` times the lowest
  major-cycle start peak seen so far ("Initial peak:" / "Start peak="). A converging clean lowers the start
  peak cycle after cycle (measured: each start at most 2.5x the previous cycle's stop, never above an
  earlier start); gains that are too high make it climb. Sub-image lines of parallel deconvolution
  ("(7) Iteration ...") and multi-scale components of scales above 0 px have their own peak levels and are
  not compared;
- stopping at the iteration limit far above the threshold: "Stopped on peak P, because maximum number of
  iterations was reached" with |P| more than `FAR_ABOVE` times the run's threshold (`-threshold`, or
  `-auto-threshold` x the last "Estimated standard deviation of background noise") and more than `GROWTH`/2
  times the lowest start peak (it went back up: an under-cleaned run stops below its lowest start);
- after the run (`image_divergence`): a restored or model image whose peak |value| is more than
  `IMAGE_FACTOR` times its dirty image's (per channel and MFS). Cleaning cannot make a restored image
  brighter than its dirty image by much (measured 1.00-1.02 on converging runs; 69 and 9550 on diverged
  runs that never reached 1 kJy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence

from mpimager.errors import WatchAbort

DIVERGENCE_JY = 1e3
GROWTH = 5.0
FAR_ABOVE = 20.0
IMAGE_FACTOR = 5.0



class Divergence(WatchAbort):
    """WSClean's deconvolution ran away (see the module docstring for the rules)."""

    reason = "WSClean deconvolution diverged"


class IOFailure(WatchAbort):
    """The process reported a failed read/write (missing table, full disk, I/O error)."""

    reason = "I/O failure"


_FLUX_UNITS = {"nJy": 1e-9, "µJy": 1e-6, "uJy": 1e-6, "mJy": 1e-3, "Jy": 1.0, "KJy": 1e3, "kJy": 1e3}
_UNIT = r"(nJy|µJy|uJy|mJy|KJy|kJy|Jy)\b"
_NUMBER = r"[-+]?(?:nan|inf|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"
# The lines where WSClean reports the current peak/component of the deconvolution:
#   "Iteration 2115, scale 0 px : -1.11 KJy at 26,70"   (multi-scale minor cycle)
#   "(7) Iteration 124, scale 0 px : -107.73 mJy at 11,0" (parallel deconvolution sub-image)
#   "Iteration 2000: -155.67 KJy at 21,92"             (generic clean without sub-minor loop)
#   "Initial peak: 1.01 Jy at 34,84", "Stopped on peak 7.52395e+19 KJy, because ...",
#   "Next major iteration at: 201.84 mJy", "Starting multi-scale cleaning. Start peak=1.01 Jy, ..."
_PEAK_LINE = re.compile(
    r"(?:Iteration \d+(?:, scale \d+ px)?\s*:|Initial peak:|Stopped on peak|Start peak=|Next major iteration at:)"
    rf"\s*({_NUMBER})\s*{_UNIT}", re.IGNORECASE)
_START_PEAK = re.compile(rf"^(?:Initial peak:|Starting multi-scale cleaning\. Start peak=)\s*({_NUMBER})\s*{_UNIT}")
_AT_LIMIT = re.compile(rf"^Stopped on peak\s*({_NUMBER})\s*{_UNIT}, because maximum number of iterations")
_NOISE = re.compile(rf"^Estimated standard deviation of background noise:\s*({_NUMBER})\s*{_UNIT}")
_WIDER_SCALE = re.compile(r"Iteration \d+, scale [1-9]\d* px")
_NEW_DECONVOLUTION = re.compile(r"==\s*Deconvolving \(1\)\s*==")
_IO_ERROR = re.compile(
    r"Table \S.* does not exist|Error writing|Error (?:while )?reading|No space left on device|"
    r"Input/output error|\bI/O error|Disk quota exceeded|Read-only file system|Stale file handle|"
    r"CFITSIO reported error|FilebufIO object .* is not writable", re.IGNORECASE)


def _jy(number: str, unit: str) -> float:
    return float(number) * _FLUX_UNITS[next(u for u in _FLUX_UNITS if u.lower() == unit.lower())]


def peak_flux_jy(line: str) -> float | None:
    """The flux (Jy) of a WSClean deconvolution peak/iteration line, or None for other lines."""
    m = _PEAK_LINE.search(line)
    return None if m is None else _jy(m.group(1), m.group(2))


def _argv_float(argv: Sequence[str], flag: str) -> float | None:
    """The value of `flag` in a WSClean argv, in Jy for -threshold ('1mJy', '0.5'); None when unset."""
    if flag not in argv or argv.index(flag) + 1 >= len(argv):
        return None
    text = argv[argv.index(flag) + 1]
    m = re.fullmatch(rf"({_NUMBER})\s*(nJy|µJy|uJy|mJy|KJy|kJy|Jy)?", text)
    if not m:
        return None
    return _jy(m.group(1), m.group(2)) if m.group(2) else float(m.group(1))


class WSCleanWatcher:
    """The state of one WSClean run's output, line by line (see the module docstring for the rules)."""

    def __init__(self, argv: Sequence[str] = (), *, divergence_jy: float = DIVERGENCE_JY):
        self.divergence_jy = divergence_jy
        self.threshold_jy = _argv_float(argv, "-threshold")
        self.auto_threshold = _argv_float(argv, "-auto-threshold")
        self.noise_jy: float | None = None
        self.lowest_start: float | None = None

    def threshold(self) -> float | None:
        """The deconvolution's stopping threshold (Jy) as far as the output has told it."""
        auto = self.auto_threshold * self.noise_jy if self.auto_threshold and self.noise_jy else None
        known = [t for t in (self.threshold_jy, auto) if t]
        return max(known) if known else None

    def __call__(self, line: str) -> None:
        if _IO_ERROR.search(line):
            raise IOFailure(line)
        if _NEW_DECONVOLUTION.search(line):
            self.lowest_start = None
            return
        if m := _NOISE.match(line):
            self.noise_jy = abs(_jy(m.group(1), m.group(2)))
            return
        flux = peak_flux_jy(line)
        if flux is None:
            return
        if not math.isfinite(flux) or abs(flux) >= self.divergence_jy:
            raise Divergence(line)
        if line.startswith("(") or _WIDER_SCALE.search(line):
            return  # a sub-image of parallel deconvolution, or a multi-scale component of a wider scale
        peak = abs(flux)
        if self.lowest_start is not None and peak > GROWTH * self.lowest_start:
            raise Divergence(line, reason=f"WSClean deconvolution diverged (the peak grew to {peak:.3g} Jy, "
                                          f"{peak / self.lowest_start:.0f}x the lowest major-cycle start peak "
                                          f"{self.lowest_start:.3g} Jy)")
        if (m := _AT_LIMIT.match(line)) and self.lowest_start is not None:
            threshold = self.threshold()
            if threshold and peak > FAR_ABOVE * threshold and peak > GROWTH / 2 * self.lowest_start:
                raise Divergence(line, reason=f"WSClean deconvolution diverged (stopped at the iteration limit "
                                              f"on {peak:.3g} Jy, {peak / threshold:.0f}x its threshold "
                                              f"{threshold:.3g} Jy)")
        if _START_PEAK.match(line):
            self.lowest_start = peak if self.lowest_start is None else min(self.lowest_start, peak)


def wsclean_watcher(argv: Sequence[str] = (), *, divergence_jy: float = DIVERGENCE_JY) -> Callable[[str], None]:
    """A line watcher for one WSClean run of `argv` (its -threshold and -auto-threshold are read): raises
    Divergence by the module's rules (a peak of `divergence_jy`, default 1 kJy, or NaN; a growing peak; a stop
    at the iteration limit far above the threshold), IOFailure on a read/write failure line."""
    return WSCleanWatcher(argv, divergence_jy=divergence_jy)


# ------------------------------------------------------------------------------------------------ images

_DIRTY_PAIR = re.compile(r"-(image|model)\.fits$")


def _peak(path: str) -> float | None:
    import numpy as np
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        data = hdul[0].data
        if data is None or data.size == 0:
            return None
        finite = np.isfinite(data)
        if not finite.all() and finite.any():
            return float("inf") if np.isinf(data).any() else float(np.nanmax(np.abs(data)))
        return float(np.max(np.abs(data))) if finite.any() else None


def image_divergence(outputs: Iterable[str], factor: float = IMAGE_FACTOR) -> str | None:
    """Why a finished WSClean run's images show a divergence, or None: a restored (`-image`) or `-model` image
    whose peak |value| exceeds `factor` x the peak of the dirty image of the same channel and polarisation
    (or is infinite). Images without a dirty sibling among `outputs` (-no-dirty) are not judged."""
    outputs = list(outputs)
    present = set(outputs)
    worst: tuple[float, str] | None = None
    for path in outputs:
        m = _DIRTY_PAIR.search(path)
        if m is None:
            continue
        dirty = path[:m.start()] + "-dirty.fits"
        if dirty not in present:
            continue
        try:
            peak, reference = _peak(path), _peak(dirty)
        except OSError:
            continue  # unreadable outputs are check_outputs' business
        if peak is None or not reference:
            continue
        ratio = peak / reference
        if ratio > factor and (worst is None or ratio > worst[0]):
            kind = "restored" if m.group(1) == "image" else "model"
            worst = (ratio, f"WSClean deconvolution diverged: the {kind} image {path.rsplit('/', 1)[-1]} peaks at "
                            f"{peak:.3g} Jy, {ratio:.3g}x its dirty image's {reference:.3g} Jy")
    return None if worst is None else worst[1]


# ------------------------------------------------------------------------------------------------ errors

_BORDER = re.compile(r"^[\s+*=-]*$")


def error_line(tail: Sequence[str]) -> str:
    """The line of a failed WSClean run's last output `tail` that says why: its `>>> ...` exception line
    (WSClean frames it with `+ + +` border lines), else the last line that is not a border, else ''."""
    for line in reversed(tail):
        if ">>>" in line:
            return line.split(">>>", 1)[1].strip()
    return next((line.strip() for line in reversed(tail) if line.strip() and not _BORDER.match(line)), "")
