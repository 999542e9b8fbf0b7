"""Write a commented starter config: `mpimager init [--telescope askap|nenufar|generic] [PATH]`.

askap: Arrakis' SB8593 set-up key for key (with every spice_image option's mapping); nenufar: imgpipe's
documented example, with the data handler file it names (data_handler.toml, beside PATH); generic: any
telescope's MSs. PATH defaults to ./mpimager.toml; an existing file is never overwritten (exit 2) unless --force.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mpimager.errors import InputError
from mpimager.resources import example_config

log = logging.getLogger(__name__)

STARTERS = {"askap": ("askap.toml",), "nenufar": ("nenufar.toml", "data_handler.toml"), "generic": ("generic.toml",)}


def add_arguments(parser):
    """Add the `mpimager init` arguments to `parser` (main.build_parser adds the output options)."""
    parser.add_argument("path", nargs="?", default="mpimager.toml", metavar="PATH",
                        help="the config to write (default ./mpimager.toml)")
    parser.add_argument("--telescope", choices=sorted(STARTERS), default="generic",
                        help="which starter (default generic)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def write_starter(telescope: str, path: Path, force: bool = False) -> list[Path]:
    """Copy the packaged starter of `telescope` to `path` (and its companion files beside it): the files written.

    Raises InputError, having written nothing, when a file exists (and not `force`) or cannot be written."""
    main, *companions = STARTERS[telescope]
    targets = [(example_config(main), Path(path).absolute())]
    targets += [(example_config(c), Path(path).absolute().with_name(c)) for c in companions]
    existing = [t for _, t in targets if t.exists()]
    if existing and not force:
        raise InputError(f"{existing[0]}: exists (mpimager init --force overwrites it)")
    for _, target in targets:
        if not os.access(target.parent if target.parent.exists() else target.parent.parent, os.W_OK):
            raise InputError(f"{target}: cannot be written (no write permission on {target.parent})")
    for source, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source.read_text())
    return [t for _, t in targets]


def run(args) -> int:
    """Write the starter config of `args.telescope` (`write_starter`), print each file written; exit code 0."""
    written = write_starter(args.telescope, Path(args.path), args.force)
    for p in written:
        print(p)
    log.info(f"next: edit {written[0].name}, then `mpimager {written[0].name} MS... --dry-run`")
    return 0
