"""Grouping channel images (and cubes' planes) into cubes and deciding, plane by plane, what each becomes.

Pure: takes `ChannelImage`s (header facts; a cube's planes are ChannelImages too, named by the cube) and
`ReduceOptions`, returns `CubePlan`s (one per prefix, Stokes and product) and the products that cannot be
made, each with its reason. No file is touched.

- Names: WSClean's `P-0000-image.fits`, `P-0000-I-image.fits`, `P-0001-Q-residual.fits`, also with
  `-t0000-` intervals (part of the prefix). `MFS`, psf, model, dirty and `-pb` images are not cube
  channels and are reported as ignored. Files with other names form one loose group (prefix '').
- Common beams: over a beam group (`scope`: each prefix; 'beam': the prefixes `groups` maps to one name,
  or all inputs without `groups`; 'observation': every prefix) of restored channel images,
  one beam (`total`) or one per frequency (`natural`), or the fixed target `beam` (either mode), optionally
  circularised, leaving out channels with no, zero, tiny or non-finite beam, channels above `psf_cutoff`
  and, without a cutoff, absurd PSF fits (`psf_outlier`: BMAJ above that many times the group's median,
  or wider than a quarter of the image: a single-baseline PSF); those channels are blanked with the reason.
- Dirty-only inputs (niter = 0: BMAJ = 0 in every channel) cannot be PSF-matched: a restored cube of them
  fails naming that, and a run asks for `unconvolved` cubes of them instead (planner/jobs.py). Residual planes follow
  their restored sibling's beam and fate. Unconvolved cubes keep every plane and its own beam.
- Spectral axis: channels sorted by frequency on a regular grid (step = channel width when that fits,
  else the smallest spacing); NaN planes fill gaps; an irregular grid or two channels at one frequency
  fail that product.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from mpimager.config.reduce import ReduceOptions
from mpimager.reduce.beams import Beam, common_beam, convolving_beam, round_up_beam
from mpimager.reduce.fitsio import ChannelImage, ReadSpec, grid_difference
from mpimager.reduce.kernel import beam_scale, pixel_covariance
from mpimager.wsclean.names import parse_image_name

CUBE_SOURCE = {"restored": "image", "residual": "residual", "unconvolved": "image"}
#: (prefix, Stokes, channel number or frequency rounded to 0.1 Hz): a restored plane and its residual share it
_Key: TypeAlias = tuple[str, str, float | None]


@dataclass(frozen=True)
class Name:
    """What a channel image's file name says."""

    prefix: str
    chan: int | None
    pol: str | None
    kind: str
    note: str | None = None  # why it is not a cube channel, if it is not


def image_name(image: ChannelImage) -> Name:
    """What a channel image's name says, or, for a cube's plane, what its cube's name and plane say."""
    o = image.origin
    if o is not None:
        return Name(o.prefix, o.chan, image.stokes, o.kind)
    return parse_name(image.path)


def parse_name(path: Path) -> Name:
    """What the WSClean-style file name of `path` says (a `note` if it is no cube channel)."""
    n = parse_image_name(path.name)
    if n is None:
        kind = "residual" if path.name.endswith("-residual.fits") else "image"
        return Name("", None, None, kind)
    if n.chan is None:
        return Name(n.prefix, None, n.pol, n.kind, "MFS image")
    if n.pb:
        return Name(n.prefix, n.chan, n.pol, n.kind, "primary-beam corrected image")
    if n.kind not in ("image", "residual"):
        return Name(n.prefix, n.chan, n.pol, n.kind, f"{n.kind} image")
    return Name(n.prefix, n.chan, n.pol, n.kind)


@dataclass(frozen=True)
class PlaneSpec:
    """One plane of one cube: what to read, how to convolve it, where to write it. Crosses MPI."""

    index: int
    read: ReadSpec | None  # None: a NaN plane (gap or blanked channel)
    kernel: tuple[float, float, float] | None  # pixel covariance of the convolving Gaussian; None: none
    scale: float = 1.0
    blank_empty: bool = True  # write NaN if the plane read is all NaN or all zero (unconvolved: keep it)


@dataclass(frozen=True)
class PlaneRecord:
    """The beam log line of a plane."""

    index: int
    freq: float
    source: Path | None
    beam_in: Beam | None
    beam_out: Beam | None
    status: str  # convolved | copied | blanked | gap
    reason: str = ""
    beam_from: str = ""  # where beam_in came from: header, BEAMS table, beam log NAME


@dataclass(frozen=True)
class CubePlan:
    """One cube to write."""

    prefix: str
    stokes: str
    kind: str  # restored | residual | unconvolved
    resolution: str  # total | natural (unconvolved cubes: natural, one beam per plane) | none (no beam at all)
    template: ChannelImage  # its header is the cube header's starting point
    freq0: float
    step: float
    records: tuple[PlaneRecord, ...]
    planes: tuple[PlaneSpec, ...]
    beam: Beam | None  # the one beam of a 'total' cube
    shape: tuple[int, int]
    ref_beam: Beam | None = None  # natural cubes: the header beam (ref_chan / ref_freq), else none

    @property
    def sources(self) -> tuple[Path, ...]:
        return tuple(r.source for r in self.records if r.source is not None)

    @property
    def label(self) -> str:
        return f"{self.prefix or 'cube'} Stokes {self.stokes} {self.kind}"


@dataclass(frozen=True)
class Failure:
    """A product that cannot be made, and why."""

    prefix: str
    stokes: str
    kind: str
    error: str


@dataclass
class PlanResult:
    cubes: list[CubePlan] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    ignored: dict[str, list[Path]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Chan:
    image: ChannelImage
    name: Name
    stokes: str

    @property
    def key(self) -> _Key:
        """(prefix, Stokes, channel): a restored plane and its residual share it (by frequency if known)."""
        f = self.image.freq
        return (self.name.prefix, self.stokes, self.name.chan if f is None else round(f, 1))

    @property
    def known_beam(self) -> Beam:
        """The beam of a channel `_usable` kept (only channels with a beam are kept)."""
        beam = self.image.beam
        assert beam is not None, f"{self.image.path}: a channel without a beam among the usable ones"
        return beam


def plan_cubes(images: Sequence[ChannelImage], options: ReduceOptions,
               groups: Mapping[str, str] | None = None, log: Callable[[str], None] | None = None) -> PlanResult:
    """Every cube of `options.cubes` the channel images make, with per-plane decisions.

    images: the channel images and cubes' planes. options: the [reduce] options. groups: prefix -> beam
    group (scope 'beam'). log: where the common beam solver's notes go (None: nowhere).
    """
    result = PlanResult()
    chans: list[_Chan] = []
    for image in images:
        name = image_name(image)
        if name.note:
            result.ignored.setdefault(name.note, []).append(image.path)
            continue
        stokes = image.stokes or name.pol or "I"
        chans.append(_Chan(image, name, stokes))

    by_product: dict[tuple[str, str, str], list[_Chan]] = defaultdict(list)
    for c in chans:
        by_product[(c.name.prefix, c.stokes, c.name.kind)].append(c)
    # the channel that carries the beam of a (prefix, Stokes, channel): the restored image, else the
    # residual (a residual's beam is its restored image's)
    carriers: dict[_Key, _Chan] = {}
    for c in sorted(chans, key=lambda c: c.name.kind != "image"):
        carriers.setdefault(c.key, c)

    # --- beams: decide per carrier (its target or why it is blanked)
    decisions = _beam_decisions(list(carriers.values()), options, groups or {})

    for kind in options.cubes:
        source_kind = CUBE_SOURCE[kind]
        if not any(k == source_kind for (_, _, k) in by_product):
            result.notes.append(f"no {source_kind} channel images among the inputs for {kind} cubes")
        for (prefix, stokes, k), members in sorted(by_product.items()):
            if k != source_kind:
                continue
            try:
                result.cubes.append(_plan_cube(prefix, stokes, kind, members, options, decisions,
                                               carriers))
            except _ProductError as exc:
                result.failures.append(Failure(prefix, stokes, kind, str(exc)))
    return result


class _ProductError(Exception):
    pass


@dataclass(frozen=True)
class _Match:
    """A restored channel to PSF-match: its beam, the target, and the Gaussian between them (zero: copy)."""

    beam: Beam
    target: Beam
    kernel: Beam


@dataclass(frozen=True)
class _Blank:
    """A restored channel to blank, and why."""

    reason: str


_Decision: TypeAlias = _Match | _Blank


def _beam_decisions(restored: list[_Chan], options: ReduceOptions,
                    groups: Mapping[str, str]) -> dict[_Key, _Decision]:
    """Target beam (or blanking reason) for every restored channel, keyed by channel key."""
    decisions: dict[_Key, _Decision] = {}
    group_of: Callable[[_Chan], str]
    if options.scope == "observation" or (options.scope == "beam" and not groups):
        group_of = lambda c: "*"  # noqa: E731  (scope 'beam' without groups: the inputs are one beam's)
    else:
        group_of = lambda c: groups.get(c.name.prefix, c.name.prefix)  # noqa: E731
    by_group: dict[str, list[_Chan]] = defaultdict(list)
    for c in restored:
        by_group[group_of(c)].append(c)

    for members in by_group.values():
        usable, excluded = _usable(members, options)
        if options.beam is not None:
            fixed = _target(Beam(*options.beam), options)
            targets = {c.key: fixed for c in usable}
        elif options.resolution == "total":
            targets = {}
            if usable:
                cb = _target(common_beam([c.known_beam for c in usable], options.round_up), options)
                targets = {c.key: cb for c in usable}
        else:  # natural: one beam per frequency across the group
            targets = {}
            for cluster in _frequency_clusters(usable):
                cb = _target(common_beam([c.known_beam for c in cluster], options.round_up), options)
                targets.update({c.key: cb for c in cluster})
        for c in members:
            if c.key in excluded:
                decisions[c.key] = _Blank(excluded[c.key])
                continue
            target = targets[c.key]
            kernel = convolving_beam(target, c.known_beam)
            if kernel is None:
                decisions[c.key] = _Blank(f"beam {c.image.beam} cannot be convolved to {target} "
                                          f"(the target is smaller along some axis)")
            else:
                decisions[c.key] = _Match(c.known_beam, target, kernel)
    return decisions


def _usable(members: list[_Chan], options: ReduceOptions) -> tuple[list[_Chan], dict[_Key, str]]:
    """The channels whose beams may set the common beam, and why each other one is blanked."""
    usable: list[_Chan] = []
    excluded: dict[_Key, str] = {}
    cutoff = options.psf_cutoff
    for c in members:
        b = c.image.beam
        if b is None:
            excluded[c.key] = c.image.beam_problem or "no beam"
        elif cutoff is not None and b.major > cutoff:
            excluded[c.key] = f'BMAJ {b.major:.2f}" > psf_cutoff {cutoff:g}"'
        elif cutoff is None and options.psf_outlier and b.major > _image_width(c.image) / 4:
            excluded[c.key] = (f'absurd PSF fit: BMAJ {b.major:.1f}" is wider than a quarter of the image '
                               f'({_image_width(c.image):.0f}"); set psf_cutoff to choose')
        else:
            usable.append(c)
    if cutoff is None and options.psf_outlier and len(usable) > 2:
        median = statistics.median(c.known_beam.major for c in usable)
        limit = options.psf_outlier * median
        for c in [c for c in usable if c.known_beam.major > limit]:
            excluded[c.key] = (f'outlier PSF fit: BMAJ {c.known_beam.major:.2f}" > psf_outlier {options.psf_outlier:g}'
                               f' x the median {median:.2f}"; set psf_cutoff, or psf_outlier = 0 to keep it')
            usable.remove(c)
    return usable, excluded


def _image_width(image: ChannelImage) -> float:
    """Arcsec: the smaller side of the image."""
    (a, b), (c, d) = image.pixel_matrix
    ny, nx = image.read.shape
    return 3600.0 * min(nx * math.hypot(a, c), ny * math.hypot(b, d))


def _target(beam: Beam, options: ReduceOptions) -> Beam:
    """The common beam, circularised if asked (a circle every channel's beam fits in, rounded up)."""
    if not options.circularise:
        return beam
    circle = Beam(beam.major, beam.major, 0.0)
    return round_up_beam(circle, options.round_up)


def _frequency_clusters(chans: list[_Chan]) -> list[list[_Chan]]:
    """Channels grouped by frequency (within 1e-6 relative): 'the same channel' across prefixes."""
    known = sorted(((c.image.freq, c) for c in chans if c.image.freq is not None), key=lambda fc: fc[0])
    clusters: list[list[_Chan]] = []
    last = 0.0  # the frequency of the last channel clustered
    for f, c in known:
        if clusters and abs(f - last) <= 1e-6 * abs(f):
            clusters[-1].append(c)
        else:
            clusters.append([c])
        last = f
    clusters.extend([c] for c in chans if c.image.freq is None)
    return clusters


def _frequency_grid(members: list[_Chan], label: str) -> tuple[float, float, list[int]]:
    """(first frequency, step, plane index of each member in order) of a regular grid."""
    freqs: list[float] = []
    for c in members:
        if c.image.freq is None:
            raise _ProductError(f"{label}: {c.image.path} has no frequency (no FREQ axis)")
        freqs.append(c.image.freq)
    order = sorted(range(len(members)), key=lambda i: freqs[i])
    fs = [freqs[i] for i in order]
    for a, b in itertools.pairwise(order):
        if abs(freqs[b] - freqs[a]) <= 1e-9 * abs(freqs[a]):
            raise _ProductError(f"{label}: two channel images at {freqs[a]:.6g} Hz: "
                                f"{members[a].image.path} and {members[b].image.path}")
    if len(fs) == 1:
        step = members[0].image.width or 1.0
        return fs[0], step, [0]
    spacing = min(b - a for a, b in itertools.pairwise(fs))
    widths = {round(c.image.width, 3) for c in members if c.image.width}
    candidates = ([min(widths)] if len(widths) == 1 and min(widths) < spacing * (1 - 1e-6) else []) + [spacing]
    for step in candidates:
        pos = [(f - fs[0]) / step for f in fs]
        if all(abs(p - round(p)) < 1e-3 for p in pos):
            n = round(pos[-1]) + 1
            if n > max(4 * len(fs), len(fs) + 64):
                continue
            index = {i: round((freqs[i] - fs[0]) / step) for i in range(len(members))}
            return fs[0], step, [index[i] for i in range(len(members))]
    raise _ProductError(f"{label}: channel frequencies are not on a regular grid "
                        f"({', '.join(f'{f / 1e6:.4f}' for f in fs[:6])}{' ...' if len(fs) > 6 else ''} MHz;"
                        f" WSClean's are regular when -channels-out divides the number of MS channels)")


def _plan_cube(prefix: str, stokes: str, kind: str, members: list[_Chan], options: ReduceOptions,
               decisions: Mapping[_Key, _Decision], carriers: Mapping[_Key, _Chan]) -> CubePlan:
    label = f"{prefix or 'cube'} Stokes {stokes} {kind}"
    freq0, step, index = _frequency_grid(members, label)
    by_plane = dict(zip(index, members, strict=True))
    first = by_plane[0].image
    for c in members:
        diff = grid_difference(first.grid, c.image.grid)
        if diff:
            raise _ProductError(f"{label}: {c.image.path} is on a different pixel grid from "
                                f"{first.path} ({diff})")
    nplanes = max(index) + 1
    convolve = kind != "unconvolved"
    records: list[PlaneRecord] = []
    planes: list[PlaneSpec] = []
    usable = 0
    for p in range(nplanes):
        freq = freq0 + p * step
        member = by_plane.get(p)
        if member is None:
            records.append(PlaneRecord(p, freq, None, None, None, "gap", "no channel image at this frequency"))
            planes.append(PlaneSpec(p, None, None))
            continue
        img = member.image
        if not convolve:
            records.append(PlaneRecord(p, freq, img.path, img.beam, img.beam, "copied",
                                       img.beam_problem or "", img.beam_from))
            planes.append(PlaneSpec(p, img.read, None, blank_empty=False))
            usable += 1
            continue
        carrier = carriers[member.key].image
        decision = decisions[member.key]
        beam_in, beam_from = carrier.beam, carrier.beam_from
        if isinstance(decision, _Blank):
            records.append(PlaneRecord(p, freq, img.path, beam_in, None, "blanked", decision.reason, beam_from))
            planes.append(PlaneSpec(p, None, None))
            continue
        kbeam = decision.kernel  # the carrier's beam (decision.beam) to the target
        scale = beam_scale(decision.target, decision.beam, img.bunit)
        if kbeam.major == 0.0:
            records.append(PlaneRecord(p, freq, img.path, beam_in, decision.target, "copied", "", beam_from))
            planes.append(PlaneSpec(p, img.read, None, scale))
        else:
            records.append(PlaneRecord(p, freq, img.path, beam_in, decision.target, "convolved", "", beam_from))
            planes.append(PlaneSpec(p, img.read, pixel_covariance(kbeam, img.pixel_matrix), scale))
        usable += 1
    if usable == 0:
        reasons = sorted({r.reason for r in records if r.status == "blanked"})
        hint = ""
        if all(r.reason.startswith("zero beam") for r in records if r.status == "blanked"):
            hint = ("; no channel has a restoring beam, as after a dirty-only run (niter = 0): "
                    "ask for unconvolved cubes to stack them as they are")
        raise _ProductError(f"{label}: no channel left to make a cube from ({'; '.join(reasons)}){hint}")
    resolution = options.resolution if convolve else "natural"
    cube_beam = None
    if resolution == "total":
        cube_beam = next(r.beam_out for r in records if r.beam_out is not None)
    elif all(r.beam_out is None for r in records):  # unconvolved planes without any beam (niter = 0)
        resolution = "none"
    return CubePlan(prefix=prefix, stokes=stokes, kind=kind, resolution=resolution, template=first,
                    freq0=freq0, step=step, records=tuple(records), planes=tuple(planes), beam=cube_beam,
                    shape=first.read.shape, ref_beam=_reference_beam(records, options) if resolution == "natural"
                    else None)


def _reference_beam(records: list[PlaneRecord], options: ReduceOptions) -> Beam | None:
    """The header beam of a natural cube: the plane `ref_chan` names or the one nearest `ref_freq`
    (the nearest plane with a beam to it); None without either."""
    ref, ref_freq = options.ref_chan, options.ref_freq
    with_beam = [r for r in records if r.beam_out is not None]
    if not with_beam:
        return None
    if ref_freq is not None:
        return min(with_beam, key=lambda r: abs(r.freq - ref_freq)).beam_out
    if ref is None:
        return None
    # ReduceOptions allows 'first', 'last', 'mid' or a plane index
    index = ref if isinstance(ref, int) else {"first": 0, "last": len(records) - 1, "mid": len(records) // 2}[ref]
    return min(with_beam, key=lambda r: abs(r.index - index)).beam_out
