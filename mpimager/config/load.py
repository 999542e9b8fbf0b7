"""The TOML configuration: layered loading, validation, and the frozen option values the rest reads.

Layers, bottom to top: the packaged `defaults.toml`, then the chain of `default_settings = "path"` files
the user's file names, then the user's file. Tables merge key by key; in `[wsclean]` and `[passes.*]`
a `false` removes a flag set by a lower layer. Relative paths resolve against the file that names
them; `~` and `$VAR` are expanded (mpimager's own `$token$`s are left for the plan).

Every problem is reported at once, on one line, naming the file, the key path and what was expected,
with the nearest valid key for a misspelt one. `[wsclean]` keys are checked against the option list of
the WSClean that will run by `mpimager.wsclean.options.check_options`, not here.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpimager.config.container import ContainerOptions
from mpimager.config.mosaic import MosaicOptions
from mpimager.config.reduce import ReduceOptions
from mpimager.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULTS = Path(__file__).with_name("defaults.toml")

#: tokens whose value is an absolute path: an out-dir starting with one is not made relative to the file
ABSOLUTE_TOKENS = ("$ms_in$", "$ms_dir$", "$run_dir$")
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


@dataclass(frozen=True)
class DataHandlerOptions:
    """Where obs_id patterns are resolved (see mpimager.inputs.datahandler)."""

    config_file: Path | None = None
    """A TOML file mapping data level, obs_id and spectral window to MS paths or globs (for obs_id inputs)."""
    data_level: str | None = None
    """The data level (table) of config_file to read, e.g. "L2"."""


def is_askap(telescope: str) -> bool:
    """An ASKAP MS (TELESCOPE_NAME): FixMS applies, and FEED1 numbers its beam."""
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

    def applies_to(self, telescope: str) -> bool:
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
# schema of the plain sections: key -> (parser, description of what is expected)


def _int(minimum):
    def parse(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return v
    return parse


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _str(v):
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def _regex(v):
    _str(v)
    try:
        if re.compile(v).groups < 1:
            raise ValueError("a regular expression with one (group) capturing the host name")
    except re.error as exc:
        raise ValueError(f"a valid regular expression ({exc})") from None
    return v


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*$")


def _duration(v):
    """Seconds from a number or a string like '90m', '12h', '2d'."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return float(v)
    m = _DURATION.match(v) if isinstance(v, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ValueError("a positive number of seconds, or a string like '90m', '12h' or '2d'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _auto_or_bool(v):
    if v == "auto" or isinstance(v, bool):
        return v
    raise ValueError("true, false or \"auto\"")


PATH = object()  # marker: a path, resolved against the file that sets it

_SCHEMA: dict[str, dict[str, Callable | object]] = {
    "worker": {
        "max_concurrent": _int(1), "threads": _int(1), "env_file": PATH, "dry_run": _bool,
        "run_on_file_host": _bool, "run_on_file_host_pattern": _regex, "retries": _int(0),
        "timeout": _duration, "nodes_mpi": _int(1), "temp_dir": PATH,
    },
    "inputs": {"ms_glob_pattern": _str, "num_beams": _int(1), "data_column": _str},
    "data_handler": {"config_file": PATH, "data_level": _str},
    "fixms": {"enabled": _auto_or_bool, "data_column": _str, "corrected_data_column": _str,
              "fix_stokes_factor": _bool},
}
#: keys of the tools mpimager replaces that have no equivalent here: what to do instead
_FOREIGN_KEYS = {
    ("worker", "nodes"): "imgpipe's SSH host list has no equivalent: mpimager runs on the hosts of its MPI "
                         "or Slurm allocation (mpirun -H/--hostfile, srun, or `mpimager sbatch --nodes N`), "
                         "[worker] max_concurrent jobs on each; remove the key",
}
_TABLES = ("worker", "inputs", "data_handler", "fixms", "container", "reduce", "mosaic", "wsclean", "passes")
_TOP_KEYS = ("default_settings",)


# --------------------------------------------------------------------------------------------------------
# loading


class _Problems:
    """Collects every problem of a load, raised together as one ConfigError line."""

    def __init__(self):
        self.items: list[str] = []

    def add(self, where: str, message: str):
        self.items.append(f"{where}: {message}")

    def raise_if_any(self):
        if self.items:
            rest = self.items[1:]
            more = f" (and {len(rest)} more: " + "; ".join(rest) + ")" if rest else ""
            raise ConfigError(self.items[0] + more)


def suggest(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the nearest of `choices`, or ''."""
    near = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""


_ENV = re.compile(r"\$\{(\w+)\}|\$(\w+)(?!\w|\$)")


def expand(text: str, where: str) -> str:
    """`~` and `$VAR`/`${VAR}` expanded; `$token$` left alone; an unset variable is an error."""

    def sub(m):
        name = m.group(1) or m.group(2)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable ${name} is not set")
        return os.environ[name]

    return os.path.expanduser(_ENV.sub(sub, text))


def resolve_path(text: str, base: Path, where: str) -> Path:
    p = Path(expand(text, where))
    return p if p.is_absolute() else (base / p)


def read_toml(path: Path) -> dict:
    """Parse one TOML file; a syntax error names the file, line and column."""
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


def _normalise_layer(path: Path, data: dict, problems: _Problems) -> dict:
    """Check one file's table/key names and types; resolve its paths against its folder."""
    base = path.parent
    out: dict[str, dict] = {}
    for key, value in data.items():
        if key in _TOP_KEYS:
            continue
        if key not in _TABLES:
            problems.add(f"{path}", f"unknown section [{key}]{suggest(key, _TABLES)}")
            continue
        if not isinstance(value, dict):
            problems.add(f"{path}", f"'{key}' must be a table [{key}], got {type(value).__name__}")
            continue
        if key in _SCHEMA:
            table = {}
            for k, v in value.items():
                where = f"{path}: [{key}] {k}"
                parser = _SCHEMA[key].get(k)
                if (key, k) in _FOREIGN_KEYS:
                    problems.add(f"{path}: [{key}] {k}", _FOREIGN_KEYS[key, k])
                elif parser is None:
                    problems.add(f"{path}: [{key}]", f"unknown key '{k}'{suggest(k, _SCHEMA[key])}")
                elif parser is PATH:
                    if not isinstance(v, str) or not v:
                        problems.add(where, f"expected a path string, got {v!r}")
                    else:
                        try:
                            table[k] = resolve_path(v, base, where)
                        except ConfigError as exc:
                            problems.items.append(str(exc))
                elif callable(parser):
                    try:
                        table[k] = parser(v)
                    except ValueError as exc:
                        problems.add(where, f"expected {exc}, got {v!r}")
            out[key] = table
        elif key == "wsclean":
            out[key] = _wsclean_table(value, base, f"{path}: [wsclean]", problems)
        elif key == "passes":
            out[key] = {}
            for pname, ptable in value.items():
                if not isinstance(ptable, dict):
                    problems.add(f"{path}: [passes]", f"'{pname}' must be a table [passes.{pname}]")
                elif not re.fullmatch(r"[A-Za-z0-9_+-]+", pname):
                    problems.add(f"{path}: [passes.{pname}]", "a pass name may hold letters, digits, _ + - only")
                else:
                    out[key][pname] = _wsclean_table(ptable, base, f"{path}: [passes.{pname}]", problems)
        else:  # container, reduce, mosaic: validated by their own modules after merging; paths resolved here
            out[key] = _resolve_section_paths(key, value, base, f"{path}: [{key}]", problems)
    return out


def _resolve_section_paths(key: str, value: dict, base: Path, where: str, problems: _Problems) -> dict:
    table = dict(value)
    if key == "container":
        image = table.get("image")
        if isinstance(image, str) and image and "://" not in image:
            table["image"] = str(resolve_path(image, base, f"{where} image"))
        binds = table.get("binds")
        if isinstance(binds, list) and all(isinstance(b, str) for b in binds):
            table["binds"] = [_resolve_bind(b, base, f"{where} binds") for b in binds]
        for k in ("cache_dir",):
            if isinstance(table.get(k), str):
                table[k] = str(resolve_path(table[k], base, f"{where} {k}"))
    if key == "mosaic":
        for k in ("out_dir", "primary_beams"):
            if isinstance(table.get(k), str) and table[k] and not table[k].startswith(ABSOLUTE_TOKENS):
                table[k] = str(resolve_path(table[k], base, f"{where} {k}"))
    return table


def _resolve_bind(spec: str, base: Path, where: str) -> str:
    src, sep, rest = spec.partition(":")
    return str(resolve_path(src, base, where)) + sep + rest


def _wsclean_table(value: dict, base: Path, where: str, problems: _Problems) -> dict:
    """Type-check WSClean option values; resolve path-valued options and out-dir against `base`."""
    table = {}
    for k, v in value.items():
        here = f"{where} {k}"
        if isinstance(v, dict):
            problems.add(here, "expected a value (true/false, number, string or list), got a table")
            continue
        if isinstance(v, list) and not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
            problems.add(here, f"expected a list of strings or numbers, got {v!r}")
            continue
        if isinstance(v, str) and not v.strip():
            problems.add(here, "expected a value, got an empty string (use false to remove a flag)")
            continue
        try:
            if k == "out-dir" and isinstance(v, str):
                v = expand(v, here)
                if not (v.startswith(ABSOLUTE_TOKENS) or os.path.isabs(v)):
                    v = str(base / v)
            elif k in PATH_OPTIONS and isinstance(v, str):
                first, *rest = v.split()
                v = " ".join([str(resolve_path(first, base, here)), *rest])
        except ConfigError as exc:
            problems.items.append(str(exc))
            continue
        table[k] = v
    return table


def merge_layers(layers: list[dict], files: list[Path]) -> tuple[dict, dict]:
    """Key-by-key merge, later layers win; [passes] merges per pass. Also where each key was last set."""
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


def _passes(merged: dict, where: str) -> tuple[ImagingPass, ...]:
    base = merged.get("wsclean", {})
    declared = merged.get("passes", {}) or {"": {}}
    passes = []
    for suffix, overrides in declared.items():
        opts = dict(base)
        opts.update(overrides)
        name, out_dir = opts.pop("name", None), opts.pop("out-dir", None)
        pw = f"{where}: [passes.{suffix}]" if suffix else f"{where}: [wsclean]"
        if not isinstance(name, str):
            raise ConfigError(f"{pw} name: expected a string (the image name prefix), got {name!r}")
        if not isinstance(out_dir, str):
            raise ConfigError(f"{pw} out-dir: expected a path string, got {out_dir!r}")
        if name.strip() in ("", ".", ".."):
            raise ConfigError(f"{pw} name: {name!r} is not a file name (the images would land outside out-dir)")
        options = tuple((k, v) for k, v in opts.items() if v is not False)
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
    problems = _Problems()
    layers = [_normalise_layer(f, d, problems) for f, d in zip(files, datas)]
    problems.raise_if_any()
    merged, origins = merge_layers(layers, files)
    user = files[-1]

    def build(cls, table, **fields):
        return cls(**{**table, **fields})

    return Config(path=user, layers=tuple(files), passes=_passes(merged, str(user)),
                  resolved=merged, origins=origins,
                  worker=build(WorkerOptions, merged.get("worker", {})),
                  inputs=build(InputsOptions, merged.get("inputs", {})),
                  data_handler=build(DataHandlerOptions, merged.get("data_handler", {})),
                  fixms=build(FixMSSettings, merged.get("fixms", {})),
                  # these three validate themselves (ConfigError naming the file and table)
                  container=ContainerOptions.from_mapping(merged.get("container", {}), where=f"{user}: [container]"),
                  reduce=ReduceOptions.from_mapping(merged.get("reduce", {}), where=f"{user}: [reduce]"),
                  mosaic=MosaicOptions.from_mapping(merged.get("mosaic", {}), where=f"{user}: [mosaic]"))


def wsclean_keys(config: Config) -> list[tuple[str, str]]:
    """Every [wsclean] / [passes.*] option key that some pass will pass to WSClean, with where it was set
    ('FILE: [wsclean] key'). A key a `false` removed from every pass is not listed: it is never passed, so
    whether the WSClean that will run knows it does not matter (a layer can remove any key of a lower one)."""
    passed = {k for p in config.passes for k, _ in p.options}
    keys = []
    for origin, file in config.origins.items():
        table, key = origin.split(" ", 1)
        if (table == "wsclean" or table.startswith("passes.")) and key in passed:
            keys.append((key, f"{file}: [{table}] {key}"))
    return keys
