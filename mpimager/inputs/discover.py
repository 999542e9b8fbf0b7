"""Turn the command line's inputs into verified MeasurementSets with their metadata.

An input is, in this order: an MS directory; a directory searched (not recursively) with
`[inputs] ms_glob_pattern`; a glob matching files; an obs_id pattern resolved by the data handler
(when one is configured and the input holds no '/'). Anything else, an
empty glob, or a path that is not a readable MS, is an InputError naming it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mpimager.config.load import Config
from mpimager.errors import InputError, MSError
from mpimager.inputs.datahandler import load_data_handler
from mpimager.inputs.msinfo import MSInfo, is_table_dir, read_msinfo


@dataclass(frozen=True)
class InputMS:
    info: MSInfo
    obs_id: str | None = None
    sw: str | None = None


def _expand(arg: str, config: Config, handler_cache: list) -> list[tuple[str, str | None, str | None]]:
    path = Path(os.path.expanduser(arg))
    if path.is_dir():
        if is_table_dir(path):
            return [(str(path), None, None)]
        pattern = config.inputs.ms_glob_pattern
        found = sorted(str(p) for p in path.glob(pattern) if p.is_dir())
        if not found:
            raise InputError(f"{path.absolute()}: is not a MeasurementSet and holds none matching "
                             f"'{pattern}' ([inputs] ms_glob_pattern)")
        return [(f, None, None) for f in found]
    found = sorted(glob.glob(os.path.expanduser(arg))) if glob.has_magic(arg) else []
    if found:
        return [(f, None, None) for f in found]
    if path.exists():
        return [(str(path), None, None)]  # a file: read_msinfo says what is wrong with it
    if config.data_handler.config_file is not None and os.sep not in arg:  # an obs_id pattern
        if not handler_cache:
            handler_cache.append(load_data_handler(config.data_handler.config_file, config.data_handler.data_level))
        return [(h.path, h.obs_id, h.sw) for h in handler_cache[0].resolve(arg)]
    if glob.has_magic(arg):
        raise InputError(f"'{arg}': the pattern matches nothing")
    hint = "" if config.data_handler.config_file else " (obs_id patterns need [data_handler] config_file)"
    raise InputError(f"{path.absolute()}: no such MeasurementSet{hint}")


PARALLEL_FROM = 64  # MSs: below this, reading in this process is quicker than starting helpers


def read_all(paths: Sequence[str]) -> list[MSInfo]:
    """Metadata of the MSs at `paths`, in order; from `PARALLEL_FROM` MSs on and with two usable cores or
    more, read by a forked pool of one process per core (at most 8).

    The first failing MS (in input order) raises its MSError, as reading them one by one would.
    """
    from mpimager.environment import usable_cpus

    cores = usable_cpus()
    if len(paths) < PARALLEL_FROM or cores < 2:
        return [read_msinfo(p) for p in paths]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(min(cores, 8)) as pool:
        results = pool.map(_read_or_error, paths, chunksize=max(1, len(paths) // (4 * cores)))
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


def _read_or_error(path: str):
    try:
        return read_msinfo(path)
    except MSError as exc:
        return exc


def discover(args: Sequence[str], config: Config) -> list[InputMS]:
    """Every MS the inputs `args` name, each verified and described, in input order without repeats (by
    real path); obs_id patterns resolve through the data handler of `config`.

    InputError for no input, an input that names no MS, or a count other than `[inputs] num_beams`.
    """
    if not args:
        raise InputError("no input: give MeasurementSets, globs, directories or obs_id patterns")
    handler: list = []
    seen: dict[str, tuple[str, str | None, str | None]] = {}
    for arg in args:
        for path, obs_id, sw in _expand(arg, config, handler):
            seen.setdefault(os.path.realpath(path), (path, obs_id, sw))
    infos = read_all([path for path, _, _ in seen.values()])
    found = [InputMS(info, obs_id, sw) for info, (_, obs_id, sw) in zip(infos, seen.values())]
    expected = config.inputs.num_beams
    if expected is not None and len(found) != expected:
        names = ", ".join(m.info.basename for m in found[:10]) + (", ..." if len(found) > 10 else "")
        raise InputError(f"expected {expected} MeasurementSets ([inputs] num_beams in {config.path}), "
                         f"found {len(found)}: {names or 'none'}")
    return found
