"""Synthesise MeasurementSets of point sources (raw ASKAP-like beams or plain MSs) for demos and tests.

`mpimager synth DIR --beams 6` writes the raw beams of one ASKAP scheduling block (they need FixMS);
`--plain N` writes N plain MSs instead (mpimager.testing.synth.default_sources around each phase centre).
"""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser):
    parser.add_argument("directory", help="where to write the MSs (created)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--beams", type=int, default=6, help="raw ASKAP-like beams of one observation (default 6)")
    kind.add_argument("--plain", type=int, metavar="N", help="N plain MSs (data phased at FIELD, XX=I+Q)")
    parser.add_argument("--antennas", type=int, default=16)
    parser.add_argument("--times", type=int, default=16)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--spws", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.0, help="noise rms per visibility (Jy)")


def synthesise(directory: Path, *, beams: int = 6, plain: int | None = None, antennas: int = 16, times: int = 16,
               channels: int = 8, spws: int = 1, noise: float = 0.0) -> list[Path]:
    from mpimager.environment import measures_warning_once
    from mpimager.testing import synth

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    shape = dict(n_ant=antennas, n_times=times, n_chan=channels, n_spw=spws, noise_jy=noise)
    with measures_warning_once():
        if plain:
            paths = [synth.make_ms(directory / f"plain{i:02d}.ms", telescope="SYNTH", seed=i, **shape)
                     for i in range(plain)]
        else:
            paths = synth.make_askap_observation(directory, beams, **shape)
    return paths


def run(args) -> int:
    paths = synthesise(Path(args.directory), beams=args.beams, plain=args.plain, antennas=args.antennas,
                       times=args.times, channels=args.channels, spws=args.spws, noise=args.noise)
    for p in paths:
        print(p)
    return 0
