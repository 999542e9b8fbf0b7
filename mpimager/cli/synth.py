"""Synthesise MeasurementSets of point sources (raw ASKAP-like beams or plain MSs) for demos and tests.

`mpimager synth DIR --beams 6` writes the raw beams of one ASKAP scheduling block (they need FixMS);
`--plain N` writes N plain MSs instead (mpimager.testing.synth.default_sources around each phase centre).
`--real` gives the beams the shapes of real ASKAP beams (36-beam FEED, NaN in flagged samples, a flagged
channel, zero-UVW rows, no autocorrelations, no WEIGHT_SPECTRUM, POINTING and HISTORY, 1 MHz channels with
REF_FREQUENCY the first); `--state preprocessed|split` writes them as another pipeline or a split leaves them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def add_arguments(parser):
    """Add the `mpimager synth` arguments to `parser` (main.build_parser adds the output options)."""
    from mpimager.testing.synth import ASKAP_BAND_START_HZ, ASKAP_STATES

    parser.add_argument("directory", help="where to write the MSs (created)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--beams", type=int, default=6, help="raw ASKAP-like beams of one observation (default 6)")
    kind.add_argument("--plain", type=int, metavar="N", help="N plain MSs (data phased at FIELD, XX=I+Q)")
    parser.add_argument("--antennas", type=int, default=16)
    parser.add_argument("--times", type=int, default=16)
    parser.add_argument("--channels", type=int, default=8, help="channels (with --real: the first N of 288 x 1 MHz)")
    parser.add_argument("--spws", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.0, help="noise rms per visibility (Jy)")
    parser.add_argument("--real", action="store_true", help="the shapes of real ASKAP beams (see above)")
    parser.add_argument("--survey", choices=sorted(ASKAP_BAND_START_HZ), default="racs-low",
                        help="with --real: the band (RACS-low from 744 MHz, EMU from 800 MHz)")
    parser.add_argument("--state", choices=ASKAP_STATES, default="raw",
                        help="raw (needs FixMS), preprocessed by another pipeline, or split after a fix")
    parser.add_argument("--receptor-angles", metavar="DEG,DEG,...",
                        help="one receptor angle, or one per beam of the footprint (per-beam angles)")


def synthesise(directory: Path, *, beams: int = 6, plain: int | None = None, antennas: int = 16, times: int = 16,
               channels: int = 8, spws: int = 1, noise: float = 0.0, real: bool = False, survey: str = "racs-low",
               state: str = "raw", receptor_angles: tuple[float, ...] = ()) -> list[Path]:
    """Write the MSs into `directory` and return their paths: `beams` raw ASKAP-like beams of one
    observation, or `plain` plain MSs when given.

    `antennas`, `times`, `channels`, `spws`: each MS's shape; `noise`: the rms (Jy) of each real and imaginary
    part of a visibility.
    `real`, `survey`, `state`, `receptor_angles`: the ASKAP shapes (mpimager.testing.synth.REAL_ASKAP_KWARGS,
    askap_band, make_ms' askap_state).
    """
    from mpimager.environment import measures_warning_once
    from mpimager.testing import synth

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    shape: dict[str, Any] = dict(n_ant=antennas, n_times=times, n_chan=channels, n_spw=spws, noise_jy=noise)
    if real:
        shape.update(synth.REAL_ASKAP_KWARGS, **synth.askap_band(channels, survey))
    if state != "raw":
        shape["askap_state"] = state
    if receptor_angles:
        shape["receptor_angle_deg"] = receptor_angles if len(receptor_angles) > 1 else receptor_angles[0]
    with measures_warning_once():
        if plain:
            return [synth.make_ms(directory / f"plain{i:02d}.ms", telescope="SYNTH", seed=i,
                                  **{k: shape[k] for k in ("n_ant", "n_times", "n_chan", "n_spw", "noise_jy")})
                    for i in range(plain)]
        return synth.make_askap_observation(directory, beams, **shape)


def run(args) -> int:
    """Synthesise the MSs the command line asks for (`synthesise`) and print their paths; exit code 0."""
    angles = tuple(float(a) for a in args.receptor_angles.split(",")) if args.receptor_angles else ()
    paths = synthesise(Path(args.directory), beams=args.beams, plain=args.plain, antennas=args.antennas,
                       times=args.times, channels=args.channels, spws=args.spws, noise=args.noise, real=args.real,
                       survey=args.survey, state=args.state, receptor_angles=angles)
    for p in paths:
        print(p)
    return 0
