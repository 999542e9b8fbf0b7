"""The TOML configuration: layered loading, validation, and the frozen option values the rest reads.

Layers, bottom to top: the packaged `defaults.toml`, then the chain of `default_settings = "path"` files
the user's file names, then the user's file. Tables merge key by key; in `[wsclean]` and `[passes.*]`
a `false` removes a flag set by a lower layer. Relative paths resolve against the file that names
them; `~` and `$VAR` are expanded (mpimager's own `$token$`s are left for the plan).

Every table's keys are declared once (`SECTIONS`, `WSCLEAN`) in the vocabulary of mpimager.config.validate.
Each layer is checked against them, then the merged tables as a whole: every problem of every layer and
section is reported at once, on one line, naming the file, the key path and what was expected, with the
nearest valid key or value for a misspelt one. `[wsclean]` keys are checked against the option list of
the WSClean that will run by `mpimager.wsclean.options.check_options`, not here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpimager.config import container, mosaic, reduce
from mpimager.config import validate as v
from mpimager.config.container import ContainerOptions
from mpimager.config.mosaic import MosaicOptions
from mpimager.config.reduce import ReduceOptions
from mpimager.config.validate import ABSOLUTE_TOKENS, resolve_path, suggest
from mpimager.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULTS = Path(__file__).with_name("defaults.toml")

#: WSClean options whose (first) value is a path, resolved against the file that sets it
PATH_OPTIONS = frozenset({
    "fits-mask", "casa-mask", "temp-dir", "reuse-psf", "reuse-dirty", "aterm-config", "facet-regions",
    "force-spectrum", "python-deconvolution", "simulate-baseline-noise",
})

Value = Any  # a TOML scalar or list


# --------------------------------------------------------------------------------------------------------
# option values


@dataclass(frozen=True)
class WorkerOptions:
    """How jobs run: per-host concurrency, threads, environment, retries, placement."""

    max_concurrent: int | None = None
    """WSClean jobs at once per host (worker ranks per node in a Slurm script); None: one per worker rank."""
    threads: int | None = None
    """WSClean's -j; default SLURM_CPUS_PER_TASK, else the usable CPUs (affinity mask) / max_concurrent."""
    env_file: Path | None = None
    """A file bash sources before each job (module loads, site set-up); a failing source fails the job."""
    dry_run: bool = False
    """Same as --dry-run: print the plan, run and write nothing."""
    run_on_file_host: bool = False
    """Run each job on the host that holds its MS (the host is read from the path, run_on_file_host_pattern)."""
    run_on_file_host_pattern: str = r"/net/(node\d{3})"
    """A regular expression whose (group) is the host name in an MS path."""
    retries: int = 1
    """Extra attempts of a failed WSClean job (divergence: -mgain halved; I/O errors and kills: the same)."""
    timeout: float | None = None
    """Per attempt: seconds, or a string such as "90m", "12h", "2d"; none by default."""
    nodes_mpi: int = 1
    """More than 1: each WSClean job runs as wsclean-mp over that many hosts (as --nodes-mpi)."""
    temp_dir: Path | None = None
    """Base of each job's own -temp-dir (e.g. node-local scratch); default RUN_DIR/tmp."""

    def __post_init__(self) -> None:
        WORKER.normalise(self, "WorkerOptions")  # values built in code get the checks of a config table


@dataclass(frozen=True)
class InputsOptions:
    """How inputs become MeasurementSets."""

    ms_glob_pattern: str = "*.[Mm][Ss]"
    """The MSs searched for in directory inputs: .ms and NenuFAR's .MS (Arrakis:
    'scienceData*_averaged_cal.leakage.ms')."""
    num_beams: int | None = None
    """The number of MSs expected: any other count is an error listing what was found."""
    data_column: str | None = None
    """The column WSClean images (-data-column), checked to exist in every MS."""

    def __post_init__(self) -> None:
        INPUTS.normalise(self, "InputsOptions")


@dataclass(frozen=True)
class DataHandlerOptions:
    """Where obs_id patterns are resolved (see mpimager.inputs.datahandler)."""

    config_file: Path | None = None
    """A TOML file mapping data level, obs_id and spectral window to MS paths or globs (for obs_id inputs)."""
    data_level: str | None = None
    """The data level (table) of config_file to read, e.g. "L2"."""

    def __post_init__(self) -> None:
        DATA_HANDLER.normalise(self, "DataHandlerOptions")


def is_askap(telescope: str) -> bool:
    """Whether `telescope` (an MS's TELESCOPE_NAME) is ASKAP's: FixMS applies, and FEED1 numbers its beam."""
    return telescope.strip().upper().startswith("ASKAP")


@dataclass(frozen=True)
class FixMSSettings:
    """Whether and how FixMS runs on each MS before imaging it."""

    enabled: bool | str = "auto"
    """true, false or "auto" (only MSs whose TELESCOPE_NAME is ASKAP)."""
    data_column: str = "DATA"
    """The column FixMS reads."""
    corrected_data_column: str = "CORRECTED_DATA"
    """The column FixMS writes and WSClean then images; an existing one FixMS did not make is an error."""
    fix_stokes_factor: bool = True
    """Apply ASKAP's factor-of-two Stokes convention correction."""

    def __post_init__(self) -> None:
        FIXMS.normalise(self, "FixMSSettings")

    def applies_to(self, telescope: str) -> bool:
        """Whether FixMS runs on an MS whose TELESCOPE_NAME is `telescope`."""
        if self.enabled == "auto":
            return is_askap(telescope)
        return bool(self.enabled)


@dataclass(frozen=True)
class ImagingPass:
    """One WSClean run per MS (or group): the merged [wsclean] options with this pass' overrides.

    `options` holds every flag in order (a `false` has already removed its key); `name` and `out-dir`
    are kept apart. `suffix` is appended to the image name so passes never share a prefix.
    """

    suffix: str
    name: str
    out_dir: str
    options: tuple[tuple[str, Value], ...]

    def option(self, key: str, default: Value = None) -> Value:
        """The value of the WSClean option `key` in this pass, else `default`."""
        return dict(self.options).get(key, default)


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration."""

    path: Path
    layers: tuple[Path, ...]
    worker: WorkerOptions
    inputs: InputsOptions
    data_handler: DataHandlerOptions
    fixms: FixMSSettings
    container: ContainerOptions
    reduce: ReduceOptions
    passes: tuple[ImagingPass, ...]
    resolved: Mapping[str, Any] = field(default_factory=dict, compare=False)  # merged tables, for provenance
    origins: Mapping[str, Path] = field(default_factory=dict, compare=False)  # "table key" -> file that set it
    mosaic: MosaicOptions = field(default_factory=MosaicOptions)


# --------------------------------------------------------------------------------------------------------
# the keys of every table, declared once in the vocabulary of mpimager.config.validate


WORKER = v.Section({
    "max_concurrent": v.optional(v.integer(1)), "threads": v.optional(v.integer(1)),
    "env_file": v.optional(v.path(as_path=True)), "dry_run": v.boolean, "run_on_file_host": v.boolean,
    "run_on_file_host_pattern": v.regex(group="capturing the host name"), "retries": v.integer(0),
    "timeout": v.optional(v.duration), "nodes_mpi": v.integer(1), "temp_dir": v.optional(v.path(as_path=True)),
}, unknown=v.OF_TABLE, foreign={  # keys of the tools mpimager replaces that have no equivalent: what to do instead
    "nodes": "imgpipe's SSH host list has no equivalent: mpimager runs on the hosts of its MPI or Slurm allocation "
             "(mpirun -H/--hostfile, srun, or `mpimager sbatch --nodes N`), [worker] max_concurrent jobs on each; "
             "remove the key",
})
INPUTS = v.Section({"ms_glob_pattern": v.string(), "num_beams": v.optional(v.integer(1)),
                    "data_column": v.optional(v.string())}, unknown=v.OF_TABLE)
DATA_HANDLER = v.Section({"config_file": v.optional(v.path(as_path=True)), "data_level": v.optional(v.string())},
                         unknown=v.OF_TABLE)
FIXMS = v.Section({
    "enabled": v.either(v.boolean, v.choice(("auto",)), what='true, false or "auto"'),
    "data_column": v.string(), "corrected_data_column": v.string(), "fix_stokes_factor": v.boolean,
}, unknown=v.OF_TABLE)

#: table name -> (its option class, its keys), in the order a config is read; a Config field per table
SECTIONS: dict[str, tuple[type, v.Section]] = {
    "worker": (WorkerOptions, WORKER), "inputs": (InputsOptions, INPUTS),
    "data_handler": (DataHandlerOptions, DATA_HANDLER), "fixms": (FixMSSettings, FIXMS),
    "container": (ContainerOptions, container.SECTION), "reduce": (ReduceOptions, reduce.SECTION),
    "mosaic": (MosaicOptions, mosaic.SECTION),
}
_SCHEMA = {name: section.keys for name, (_, section) in SECTIONS.items()}


def _wsclean_value(value: Value, base: Path | None = None) -> Value:
    """A WSClean option's value: true/false, a number, a non-empty string or a list of strings and numbers."""
    if isinstance(value, dict):
        raise v.Invalid(reason="expected a value (true/false, number, string or list), got a table")
    if isinstance(value, list) and not all(isinstance(x, (str, int, float)) and not isinstance(x, bool)
                                           for x in value):
        raise v.Invalid("a list of strings or numbers")
    if isinstance(value, str) and not value.strip():
        raise v.Invalid(reason="expected a value, got an empty string (use false to remove a flag)")
    return value


_out_dir_path, _option_path = v.path(keep=ABSOLUTE_TOKENS), v.path()


def _out_dir(value: Value, base: Path | None = None) -> Value:
    value = _wsclean_value(value)
    return _out_dir_path(value, base) if isinstance(value, str) else value


def _path_option(value: Value, base: Path | None = None) -> Value:
    """A path-valued WSClean option: its first word resolved against the file that sets it."""
    value = _wsclean_value(value)
    if not isinstance(value, str):
        return value
    first, *rest = value.split()
    return " ".join([str(_option_path(first, base)), *rest])


#: [wsclean] and [passes.NAME]: any key (checked against WSClean's own option list later); paths resolved
WSCLEAN = v.Section({"out-dir": _out_dir, **{k: _path_option for k in PATH_OPTIONS}}, other=_wsclean_value)
_TABLES = (*SECTIONS, "wsclean", "passes")
_TOP_KEYS = ("default_settings",)


# --------------------------------------------------------------------------------------------------------
# loading


def read_toml(path: Path) -> dict:
    """Parse the TOML file `path`; a syntax error names the file, line and column."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot be read (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        what = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        loc = f":{m.group(1)}:{m.group(2)}" if m else ""
        raise ConfigError(f"{path}{loc}: malformed TOML: {what}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file") from None


def _layer_files(path: Path) -> list[Path]:
    """The user's file and its chain of default_settings parents, top layer last."""
    chain, seen = [], set()
    current: Path | None = path
    while current is not None:
        current = current.resolve()
        if current in seen:
            raise ConfigError(f"{current}: default_settings forms a loop")
        seen.add(current)
        chain.append(current)
        data = read_toml(current)
        parent = data.get("default_settings")
        if parent is None:
            current = None
        elif not isinstance(parent, str):
            raise ConfigError(f"{current}: default_settings: expected a path string, got {parent!r}")
        else:
            current = resolve_path(parent, current.parent, f"{current}: default_settings")
    return [DEFAULTS] + chain[::-1]


def _normalise_layer(path: Path, data: dict, problems: v.Problems) -> dict:
    """Check one file's table/key names and values; resolve its paths against its folder."""
    base = path.parent
    out: dict[str, dict] = {}
    for key, value in data.items():
        if key in _TOP_KEYS:
            continue
        if key not in _TABLES:
            problems.add(f"{path}", f"unknown section [{key}]{suggest(key, _TABLES)}")
        elif not isinstance(value, dict):
            problems.add(f"{path}", f"'{key}' must be a table [{key}], got {type(value).__name__}")
        elif key == "passes":
            out[key] = {}
            for pname, ptable in value.items():
                if not isinstance(ptable, dict):
                    problems.add(f"{path}: [passes]", f"'{pname}' must be a table [passes.{pname}]")
                elif not re.fullmatch(r"[A-Za-z0-9_+-]+", pname):
                    problems.add(f"{path}: [passes.{pname}]", "a pass name may hold letters, digits, _ + - only")
                else:
                    out[key][pname] = WSCLEAN.read(ptable, f"{path}: [passes.{pname}]", problems, base)
        else:
            section = WSCLEAN if key == "wsclean" else SECTIONS[key][1]
            out[key] = section.read(value, f"{path}: [{key}]", problems, base)
    return out


def merge_layers(layers: list[dict], files: list[Path]) -> tuple[dict, dict]:
    """The tables of `layers` (bottom first, each read from the file at the same place in `files`) merged key
    by key, later layers winning, [passes] per pass; and "table key" -> the file that set it last."""
    merged: dict[str, dict] = {}
    origins: dict[str, Path] = {}
    for layer, file in zip(layers, files):
        for table, values in layer.items():
            target = merged.setdefault(table, {})
            if table == "passes":
                for pname, opts in values.items():
                    target.setdefault(pname, {}).update(opts)
                    origins.update({f"passes.{pname} {k}": file for k in opts})
            else:
                target.update(values)
                origins.update({f"{table} {k}": file for k in values})
    return merged, origins


def _passes(merged: dict, where: str, problems: v.Problems) -> tuple[ImagingPass, ...]:
    base = merged.get("wsclean", {})
    declared = merged.get("passes", {}) or {"": {}}
    passes = []
    for suffix, overrides in declared.items():
        opts = dict(base)
        opts.update(overrides)
        name, out_dir = opts.pop("name", None), opts.pop("out-dir", None)
        pw = f"{where}: [passes.{suffix}]" if suffix else f"{where}: [wsclean]"
        if not isinstance(name, str):
            problems.add(f"{pw} name", f"expected a string (the image name prefix), got {name!r}")
        elif name.strip() in ("", ".", ".."):
            problems.add(f"{pw} name", f"{name!r} is not a file name (the images would land outside out-dir)")
        if not isinstance(out_dir, str):
            problems.add(f"{pw} out-dir", f"expected a path string, got {out_dir!r}")
        if isinstance(name, str) and isinstance(out_dir, str):
            options = tuple((k, x) for k, x in opts.items() if x is not False)
            passes.append(ImagingPass(suffix=suffix, name=name, out_dir=out_dir, options=options))
    return tuple(passes)


def load_config(path: str | os.PathLike) -> Config:
    """Load, merge and validate the config at `path` (raises ConfigError with one line)."""
    path = Path(path)
    files = _layer_files(path)
    return _load_layers(files, [read_toml(f) for f in files])


def load_config_mapping(data: Mapping[str, Any], base: str | os.PathLike | None = None) -> Config:
    """A config given as a mapping (what a TOML file would hold), layered on the defaults like a file.

    `data`: the tables (and an optional `default_settings` path); `base`: the directory its relative paths
    resolve against (default: the current directory). Errors name it as `BASE/<mapping>`."""
    base = Path(base if base is not None else os.getcwd()).absolute()
    where = base / "<mapping>"
    parent = data.get("default_settings")
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{where}: default_settings: expected a path string, got {parent!r}")
    files = _layer_files(resolve_path(parent, base, f"{where}: default_settings")) if parent else [DEFAULTS]
    return _load_layers(files + [where], [read_toml(f) for f in files] + [dict(data)])


def as_config(config: str | os.PathLike | Mapping[str, Any] | Config) -> Config:
    """`config` as a loaded Config: a Config as it is, a mapping layered like a file, else a path to load."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return load_config_mapping(config)
    return load_config(config)


def _load_layers(files: list[Path], datas: list[dict]) -> Config:
    problems = v.Problems()
    layers = [_normalise_layer(f, d, problems) for f, d in zip(files, datas)]
    merged, origins = merge_layers(layers, files)
    user = files[-1]
    for name, (_, section) in SECTIONS.items():  # the checks over a whole merged table ([container] image)
        table = merged.get(name, {})
        given = {k for d in datas if isinstance(d.get(name), dict) for k in d[name]}
        section.check_together(table, f"{user}: [{name}]", problems, refused=given - set(table))
    passes = _passes(merged, str(user), problems)
    problems.raise_if_any()  # every problem of every layer and section at once
    options = {name: cls(**merged.get(name, {})) for name, (cls, _) in SECTIONS.items()}
    return Config(path=user, layers=tuple(files), passes=passes, resolved=merged, origins=origins, **options)


def wsclean_keys(config: Config) -> list[tuple[str, str]]:
    """Every [wsclean] / [passes.*] option key that some pass of `config` will pass to WSClean, with where it was set
    ('FILE: [wsclean] key'). A key a `false` removed from every pass is not listed: it is never passed, so
    whether the WSClean that will run knows it does not matter (a layer can remove any key of a lower one)."""
    passed = {k for p in config.passes for k, _ in p.options}
    keys = []
    for origin, file in config.origins.items():
        table, key = origin.split(" ", 1)
        if (table == "wsclean" or table.startswith("passes.")) and key in passed:
            keys.append((key, f"{file}: [{table}] {key}"))
    return keys
