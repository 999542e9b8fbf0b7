"""WSClean: config values to argv, `$token$` substitution, and the option list (file names: wsclean.names).

All pure functions of their arguments except `known_options`, which asks the WSClean that will run for
its `--help` once and caches the parsed option names per binary or image identity.

Mapping of a `[wsclean]` key `k` and value `v` (one generic rule, as flint and imgpipe do):
`true` -> `-k`; `false` -> nothing (the key was removed before); a number -> `-k N`; a string -> `-k`
followed by its whitespace-separated words (`size = '1024 1024'`); a list -> `-k` and one item per element.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence

from mpimager.atomic import write_text_atomic
from mpimager.config.load import PATH_OPTIONS, suggest
from mpimager.errors import WSCleanOptionError

#: a token's value for a combined job whose MSs differ in it
MIXED = "\0mixed"

TOKENS = ("ms_in", "ms_dir", "ms_basename", "ms_stem", "name", "obs_id", "sw", "beam", "field", "pass", "run_dir")
_TOKEN = re.compile(r"\$([A-Za-z_]*)\$")

#: WSClean's cleaning gains when its argv sets none (`wsclean --help`, 3.1: "-gain ... Default: 0.1",
#: "-mgain ... Default: 1.0")
DEFAULT_GAINS = {"-gain": 0.1, "-mgain": 1.0}


def _format_value(v) -> str:
    """`v` as WSClean reads it on its command line: ints as written, floats as repr (0.8, 3.0, 1e-05)."""
    return str(v)  # ints as written, floats as repr (0.8, 3.0, 1e-05): all parsed by WSClean


def option_argv(key: str, value) -> list[str]:
    """The argv items of the option `key` with `value` (the mapping in the module docstring); [] for false
    or None."""
    if value is True:
        return [f"-{key}"]
    if value is False or value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [f"-{key}", *(_format_value(x) for x in value)]
    if isinstance(value, str):
        return [f"-{key}", *value.split()]
    return [f"-{key}", _format_value(value)]


def substitute(template: str, values: Mapping[str, str | None], where: str) -> str:
    """`template` with each `$token$` replaced by its entry in `values`.

    WSCleanOptionError, prefixed with `where` (the config key), for an unknown token, a token without a value for
    this job, or one whose MSs differ in it (`MIXED`).
    """

    def sub(m):
        token = m.group(1)
        if token not in TOKENS:
            raise WSCleanOptionError(f"{where}: unknown token ${token}$ in {template!r}{suggest(token, TOKENS)}; "
                                     f"known: " + ", ".join(f"${t}$" for t in TOKENS))
        value = values.get(token)
        if value == MIXED:
            raise WSCleanOptionError(f"{where}: token ${token}$ in {template!r} has no single value: the MSs of "
                                     f"this combined job differ in it")
        if value is None or value == "":
            raise WSCleanOptionError(f"{where}: token ${token}$ in {template!r} has no value for this job "
                                     f"({_why_unset(token)})")
        return str(value)

    return _TOKEN.sub(sub, template)


def _why_unset(token: str) -> str:
    if token in ("obs_id", "sw"):
        return "it is only known for inputs resolved through the [data_handler]"
    if token == "beam":
        return "it is only known for ASKAP MSs (TELESCOPE_NAME ASKAP) with one FEED1 beam number"
    return "no value"


_EVERY = re.compile(r"^every(\d+)$")


def resolve_channels_out(value, total_channels: int, where: str) -> int:
    """The output channel count `value` of `channels-out` asks for: an integer, 'all' (`total_channels`,
    every channel of every spectral window) or 'everyN' (`total_channels` // N); else, or when 'everyN' gives 0,
    a WSCleanOptionError prefixed with `where`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if value == "all":
        return total_channels
    m = _EVERY.match(value) if isinstance(value, str) else None
    if m and int(m.group(1)) >= 1:
        n = total_channels // int(m.group(1))
        if n == 0:
            raise WSCleanOptionError(f"{where}: '{value}' gives 0 output channels for an MS with "
                                     f"{total_channels} channels; use a smaller N or 'all'")
        return n
    raise WSCleanOptionError(f"{where}: expected an integer >= 1, 'all' or 'everyN' (e.g. 'every4'), got {value!r}")


# ------------------------------------------------------------------------------------------------
# the option list of the WSClean that will run
_HELP_OPTION = re.compile(r"(?:^|\s(?:and|/|\(or)\s+)-([a-z][a-z0-9-]*)")


def parse_help(text: str) -> frozenset[str]:
    """Option names from `wsclean --help` output `text`: each line starting with '-', plus alternatives on
    that line."""
    names = set()
    for line in text.splitlines():
        if line.startswith("-"):
            names.update(_HELP_OPTION.findall(line))
    return frozenset(names)


_ARG = re.compile(r"<[^<>]*>")


def parse_arity(text: str) -> dict[str, int]:
    """Option name -> the number of values the `wsclean --help` output `text` states for it (`-size <width>
    <height>`: 2), for the options whose help line names at least one `<value>` (others may or may not take one:
    not stated)."""
    arity = {}
    for line in text.splitlines():
        if line.startswith("-"):
            name, _, rest = line[1:].partition(" ")
            n = len(_ARG.findall(rest))
            if n and re.fullmatch(r"[a-z][a-z0-9-]*", name):
                arity[name] = n
    return arity


def _help_facts(runtime, cache: bool = True) -> dict:
    """{"options": [...], "arity": {...}} of the WSClean `runtime` runs, parsed from its --help once per
    binary/image identity and kept in the cache directory (mpimager.environment.cache_dir);
    `cache=False` (a dry run) reads the cache but writes nothing."""
    from mpimager.environment import cache_dir

    key = hashlib.sha256(runtime.identity().encode()).hexdigest()[:20]
    path = cache_dir("wsclean") / f"wsclean-options-{key}.json"
    try:
        facts = json.loads(path.read_text())
        if isinstance(facts.get("options"), list) and isinstance(facts.get("arity"), dict):
            return facts
    except (OSError, ValueError, AttributeError):
        pass
    text = runtime.help_text()
    names = parse_help(text)
    if len(names) < 20:
        raise WSCleanOptionError(f"could not read WSClean's option list from {runtime.describe()} "
                                 f"(its --help printed {len(names)} options)")
    facts = {"identity": runtime.identity(), "options": sorted(names), "arity": parse_arity(text)}
    if not cache:
        return facts
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(facts))
    except OSError:
        pass  # a read-only home only costs a --help per run
    return facts


def known_options(runtime, cache: bool = True) -> frozenset[str]:
    """The option names of the WSClean `runtime` runs (see `_help_facts` for the cache and `cache`)."""
    return frozenset(_help_facts(runtime, cache)["options"])


def option_arity(runtime, cache: bool = True) -> dict[str, int]:
    """How many values each option takes, where the --help of the WSClean `runtime` runs states it; `cache`
    as for `known_options`."""
    return dict(_help_facts(runtime, cache)["arity"])


def check_value_counts(options: Iterable[tuple[str, object, str]], arity: Mapping[str, int]) -> None:
    """Each (key, value, where) of `options` must have at least the values `arity` (from `option_arity`)
    states for its key (`size = 256` is one short of `-size <width> <height>`); more may be right
    (`weight = "briggs 0"`), so only fewer, or a bare `true`, raise WSCleanOptionError."""
    for key, value, where in options:
        want = arity.get(key, 0)
        got = option_argv(key, value)[1:]
        if want and value is not True and len(got) < want:
            raise WSCleanOptionError(f"{where}: WSClean's -{key} takes {want} values, got {len(got)} ({value!r})")
        if want and value is True:
            raise WSCleanOptionError(f"{where}: WSClean's -{key} takes {want} value{'s' * (want > 1)}, got true")


def check_options(keys: Iterable[tuple[str, str]], known: frozenset[str]) -> None:
    """Each (key, where) of `keys` must be in `known`, the options of this WSClean: else a WSCleanOptionError
    whose first line names the first unknown key and the nearest option, and counts the others."""
    problems = []
    for key, where in keys:
        if key not in known:
            problems.append(f"{where}: unknown WSClean option '{key}'{suggest(key, known)}")
    if problems:
        more = f" (and {len(problems) - 1} more: " + "; ".join(problems[1:]) + ")" if len(problems) > 1 else ""
        raise WSCleanOptionError(problems[0] + more)


def command(wsclean: str, options: Sequence[tuple[str, object]], name: str, ms: Sequence[str]) -> list[str]:
    """The argv of one WSClean run: the `wsclean` executable, `options` in order, then -name `name`, then the
    MSs `ms` (all paths absolute)."""
    argv = [wsclean]
    for key, value in options:
        argv += option_argv(key, value)
    return argv + ["-name", name, *ms]


__all__ = [
    "PATH_OPTIONS",
    "TOKENS",
    "check_options",
    "check_value_counts",
    "command",
    "known_options",
    "option_argv",
    "option_arity",
    "parse_help",
    "resolve_channels_out",
    "substitute",
]
