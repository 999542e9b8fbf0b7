"""WSClean's file-name grammar, written once: the files a run writes (`predict_outputs`) and what a file name
says (`parse_image_name`). Used by the plan (predicted outputs, the gather step's channel images), the gather
step (which planes make a cube) and the report (which images are MFS images). As measured for WSClean 3.1:

    PREFIX[-tNNNN][-CCCC|-MFS][-POL]-KIND.fits      KIND: image, residual, model, dirty, psf (no POL), ...
    PREFIX[-tNNNN][-CCCC]-uv-real.fits, -uvpsf-imag.fits, -weights.fits, PREFIX-sources.txt

POL is there when the run images more than one polarisation (XY and YX are written as XY and XYi); CCCC
(4 digits) when it has more than one output channel, beside which an MFS image is written. `-pb` before
`.fits` marks a primary-beam-corrected image. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mpimager.errors import WSCleanOptionError

POLS = ("I", "Q", "U", "V", "XX", "XY", "XYi", "YX", "YY", "RR", "RL", "RLi", "LR", "LL")
IMAGE_KINDS = ("image", "residual", "model", "dirty", "psf", "first-residual")
_IMAGE = re.compile(rf"^(?P<prefix>.+)-(?P<chan>\d{{4}}|MFS)-(?:(?P<pol>{'|'.join(POLS)})-)?"
                    rf"(?P<kind>{'|'.join(IMAGE_KINDS)})(?P<pb>-pb)?\.fits$")


@dataclass(frozen=True)
class ImageName:
    """What the name of an image of a multi-channel run says: `chan` None for the MFS image."""

    prefix: str
    chan: int | None
    pol: str | None
    kind: str
    pb: bool = False

    @property
    def is_channel(self) -> bool:
        """One output channel's image (not MFS, not primary-beam corrected)."""
        return self.chan is not None and not self.pb


def parse_image_name(name: str) -> ImageName | None:
    """`name` (a file name, no directory) as a channel or MFS image of a multi-channel run, else None (a
    single-channel run's `PREFIX[-POL]-KIND.fits`, or not a WSClean image)."""
    m = _IMAGE.match(name)
    if not m:
        return None
    chan = None if m["chan"] == "MFS" else int(m["chan"])
    return ImageName(m["prefix"], chan, m["pol"], m["kind"], bool(m["pb"]))


_SINGLE = re.compile(rf"^(?P<prefix>.+?)-(?:(?P<pol>{'|'.join(POLS)})-)?(?P<kind>{'|'.join(IMAGE_KINDS)})\.fits$")


def overview_image(name: str) -> ImageName | None:
    """`name` as an image that shows a run's whole band: the MFS image of a multi-channel run, or any image of a
    single-channel run (`PREFIX[-POL]-KIND.fits`); None for a channel or primary-beam corrected image."""
    n = parse_image_name(name)
    if n is not None:
        return n if n.chan is None and not n.pb else None
    m = _SINGLE.match(name)
    return ImageName(m["prefix"], None, m["pol"], m["kind"]) if m and not _CHANNEL_PART.search(name) else None


_CHANNEL_PART = re.compile(r"-\d{4}-")


def parse_pols(text: str) -> list[str]:
    """WSClean's -pol list `text` as upper-case names: 'IQU' -> I,Q,U; 'xx,yy' -> XX,YY; 'linear' ->
    XX,XY,YX,YY. Repeats are dropped; an unknown name raises WSCleanOptionError."""
    text = text.strip().lower()
    named = {"linear": ["xx", "xy", "yx", "yy"], "circular": ["rr", "rl", "lr", "ll"],
             "instr": ["xx", "xy", "yx", "yy"], "iquv": ["i", "q", "u", "v"]}
    parts = named.get(text) or [p for p in re.split(r"[,\s]+", text) if p]
    pols: list[str] = []
    for part in parts:
        if part in ("xx", "xy", "yx", "yy", "rr", "rl", "lr", "ll"):
            pols.append(part)
        elif all(c in "iquv" for c in part):
            pols.extend(part)
        else:
            raise WSCleanOptionError(f"unknown polarisation {part!r} in pol = {text!r}")
    return [p.upper() for p in dict.fromkeys(pols)]


def _image_pols(pols: list[str]) -> list[str]:
    """The polarisation name parts WSClean writes: XY and YX become XY (real) and XYi (imaginary)."""
    out = []
    for p in pols:
        if p in ("XY", "YX"):
            out += [x for x in ("XY", "XYi") if x not in out]
        elif p in ("RL", "LR"):
            out += [x for x in ("RL", "RLi") if x not in out]
        else:
            out.append(p)
    return out


def predict_outputs(prefix: str, options: Mapping[str, object], channels_out: int) -> list[str]:
    """The FITS (and text) files a WSClean run named `prefix` with these `options` and `channels_out` output
    channels writes, as measured for WSClean 3.1.

    Files WSClean writes only sometimes (`-save-first-residual`) are not listed.
    """
    niter = int(str(options.get("niter", 0) or 0))
    pols = _image_pols(parse_pols(str(options.get("pol", "I"))))
    intervals = int(str(options.get("intervals-out", 1) or 1))
    kinds = [] if options.get("no-dirty") else ["dirty"]
    kinds += ["image"] + (["model", "residual"] if niter > 0 else [])
    psf = niter > 0 or bool(options.get("make-psf"))
    if options.get("make-psf-only"):
        kinds, psf = [], True

    def for_channel(stem: str, mfs: bool) -> list[str]:
        files = []
        for pol in pols:
            p = f"{stem}-{pol}" if len(pols) > 1 else stem
            files += [f"{p}-{k}.fits" for k in kinds]
            if options.get("save-uv"):
                files += [f"{p}-uv-real.fits", f"{p}-uv-imag.fits"]
        if psf:  # one PSF per channel, shared by all polarisations (joined or not)
            files.append(f"{stem}-psf.fits")
            if options.get("save-uv"):
                files += [f"{stem}-uvpsf-real.fits", f"{stem}-uvpsf-imag.fits"]
        if options.get("save-weights") and not mfs:
            files.append(f"{stem}-{pols[0]}-weights.fits" if len(pols) > 1 else f"{stem}-weights.fits")
        return files

    files = []
    for t in range(intervals):
        base = f"{prefix}-t{t:04d}" if intervals > 1 else prefix
        if channels_out > 1:
            for c in range(channels_out):
                files += for_channel(f"{base}-{c:04d}", mfs=False)
            files += for_channel(f"{base}-MFS", mfs=True)
        else:
            files += for_channel(base, mfs=False)
    if options.get("save-source-list") and niter > 0:
        files.append(f"{prefix}-sources.txt")
    return files


def scratch_files(prefix: str) -> list[str]:
    """The intermediate files a WSClean run of `prefix` leaves beside its images when it is stopped before its
    end (with -join-channels: PREFIX-psf-I-0003-tmp.fits, PREFIX-model-..., PREFIX-residual-...)."""
    import glob

    return glob.glob(f"{glob.escape(prefix)}-*-tmp.fits")
