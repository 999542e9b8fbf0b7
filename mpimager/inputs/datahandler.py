"""Resolve obs_id patterns (`obsglob` or `obsglob:swglob`) to MeasurementSets through a data-handler file.

NenuFAR's data handler is not available outside NenuFAR, so mpimager reads a small TOML file of its own
that lists, per data level, each observation's spectral windows and their MSs:

    # data_handler.toml
    [L2."20231201_NT04"]                       # data level, then obs_id
    SW01 = "/data/20231201_NT04/L2/SW01.MS"    # a path, a glob, or a list of either
    SW02 = ["/data/20231201_NT04/L2/SW02_T*.MS"]

Relative paths resolve against the file's folder. `[data_handler] data_level` picks the level (it may
be left out when the file has one). A pattern matches obs_ids (and spectral windows after `:`) with
shell wildcards, as imgpipe does.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from mpimager.config.load import read_toml, resolve_path, suggest
from mpimager.config.validate import Problems
from mpimager.errors import ConfigError, InputError


@dataclass(frozen=True)
class HandledMS:
    path: str
    obs_id: str
    sw: str


@dataclass(frozen=True)
class DataHandler:
    file: Path
    level: str
    observations: dict  # obs_id -> {sw: [path patterns]}

    def resolve(self, pattern: str) -> list[HandledMS]:
        """MSs of the obs_ids (and spectral windows) matching `pattern`, sorted by obs_id, sw, path."""
        obs_glob, _, sw_glob = pattern.partition(":")
        obs_ids = sorted(o for o in self.observations if fnmatchcase(o, obs_glob))
        if not obs_ids:
            raise InputError(f"'{pattern}': no obs_id in {self.file} [{self.level}] matches '{obs_glob}' "
                             f"(it has {_listing(self.observations)})")
        found = []
        for obs in obs_ids:
            windows = self.observations[obs]
            for sw in sorted(w for w in windows if fnmatchcase(w, sw_glob or "*")):
                for item in windows[sw]:
                    matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
                    if not matches:
                        raise InputError(f"{self.file}: [{self.level}.\"{obs}\"] {sw}: '{item}' matches no file")
                    found += [HandledMS(m, obs, sw) for m in matches]
        if not found:
            raise InputError(f"'{pattern}': no spectral window matches '{sw_glob}' in obs_id(s) {', '.join(obs_ids)}")
        return found


def _listing(names, limit=6) -> str:
    names = sorted(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


def load_data_handler(file: Path, level: str | None) -> DataHandler:
    """Read and check the data-handler `file` at data `level` (None: the file's only level); a ConfigError
    naming the file and the key for anything wrong."""
    if not os.access(file, os.R_OK):
        raise ConfigError(f"{file}: data handler file cannot be read"
                          + (" (no such file)" if not file.exists() else " (permission denied)"))
    data = read_toml(file)
    if level is None:
        if len(data) != 1:
            raise ConfigError(f"{file}: holds data levels {_listing(data)}: set [data_handler] data_level")
        level = next(iter(data))
    if level not in data:
        raise ConfigError(f"{file}: no data level [{level}]{suggest(level, data)} (it has {_listing(data)})")
    observations: dict[str, dict[str, list[str]]] = {}
    problems = Problems()  # every bad entry of the level at once, as the config's own problems are
    for obs, windows in data[level].items():
        if not isinstance(windows, dict):
            problems.add(f"{file}: [{level}] {obs}", "expected a table of spectral windows")
            continue
        observations[obs] = {}
        for sw, items in windows.items():
            items = [items] if isinstance(items, str) else items
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                problems.add(f"{file}: [{level}.\"{obs}\"] {sw}", "expected a path, a glob or a list of them")
                continue
            observations[obs][sw] = [str(resolve_path(i, file.parent, f"{file}: {sw}")) for i in items]
    problems.raise_if_any()
    return DataHandler(file=file, level=level, observations=observations)
