"""The one validator vocabulary of every config section: typed validators, a table checker, one error for all.

A section declares its keys once, `Section({key: validator, ...})`; `Section.read` checks a table against it
and collects every problem into a `Problems` (an unknown key with the nearest known one, a wrong value naming
the file, table and key, what was expected and what was given, with the nearest choice for a misspelt one);
`Problems.raise_if_any` raises them together as one ConfigError line. Defaults are not written here: they
live in the option dataclasses (and defaults.toml); a validator only says what a value may be.

A validator is `parse(value, base) -> value`: it returns the value as the option holds it (a float, a tuple,
a resolved path) or raises `Invalid`. `base` is the folder relative paths resolve against (the file that set
the value); None for a table that is not read from a file (API, command-line flags): paths are taken as given.
Validators are idempotent (parsing a parsed value gives it back), so an option class may re-check its fields.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePath
from typing import Any, Protocol

from mpimager.errors import ConfigError


class Validator(Protocol):
    """`parse(value, base=None)`: the value as the option holds it, or Invalid."""

    def __call__(self, value: Any, base: Path | None = None, /) -> Any: ...


class Invalid(ValueError):
    """A value a validator refuses: what it `expected` ("expected X, got V" plus a `hint`), or a `reason`."""

    def __init__(self, expected: str = "", *, hint: str = "", reason: str = "") -> None:
        super().__init__(reason or expected)
        self.expected, self.hint, self.reason = expected, hint, reason

    def render(self, value: Any) -> str:
        """The problem with `value`, as the text after 'FILE: [table] key: '."""
        return self.reason or f"expected {self.expected}, got {value!r}{self.hint}"


def suggest(name: str, choices: Iterable[Any]) -> str:
    """' (did you mean 'x'?)' for the nearest of `choices` to `name` (compared as text), or ''."""
    if not isinstance(name, str):
        return ""
    near = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""


class Problems:
    """Every problem of a load (all layers, all sections), raised together as one ConfigError line."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        """Record `message` about `where` ('FILE: [table] key') as 'where: message'."""
        self.items.append(f"{where}: {message}")

    def add_line(self, line: str) -> None:
        """Record a problem `line` already worded in full (e.g. a ConfigError's text)."""
        self.items.append(line)

    def raise_if_any(self) -> None:
        """Raise one ConfigError: the first problem, then '(and N more: ...)' listing the others."""
        if self.items:
            rest = self.items[1:]
            more = f" (and {len(rest)} more: " + "; ".join(rest) + ")" if rest else ""
            raise ConfigError(self.items[0] + more)


# ---------------------------------------------------------------------------------------------------- scalars


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def boolean(value: Any, base: Path | None = None) -> bool:
    """`value` if it is true or false (a bool); `base` is unused."""
    if not isinstance(value, bool):
        raise Invalid("true or false")
    return value


def integer(minimum: int | None = None, *, what: str | None = None) -> Validator:
    """An integer (not a bool) >= `minimum`; `what` words the expectation (default 'an integer >= N')."""
    expected = what or ("an integer" if minimum is None else f"an integer >= {minimum}")

    def parse(value: Any, base: Path | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise Invalid(expected)
        return value
    return parse


def number(minimum: float | None = None, *, strict: bool = False, below: float | None = None,
           what: str | None = None) -> Validator:
    """A number as a float: >= `minimum` (> with `strict`) and < `below`.

    `what` words a value that is not a number or under the minimum (default 'a number', 'a number > 0');
    one at or over `below` is 'a number between MINIMUM and BELOW'."""

    def parse(value: Any, base: Path | None = None) -> float:
        if not _is_number(value):
            raise Invalid(what or "a number")
        if minimum is not None and (value < minimum or (strict and value == minimum)):
            raise Invalid(what or f"a number {'>' if strict else '>='} {minimum:g}")
        if below is not None and value >= below:
            raise Invalid(f"a number between {minimum or 0:g} and {below:g}")
        return float(value)
    return parse


def string(*, what: str = "a non-empty string", user: bool = False) -> Validator:
    """A string that is not blank; `what` words the expectation; `user`: `~` expanded (a command's path)."""

    def parse(value: Any, base: Path | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(what)
        return os.path.expanduser(value) if user else value
    return parse


def choice(choices: Iterable[str], *, quote: bool = True, fold: Callable[[str], str] | None = None) -> Validator:
    """One of `choices` (strings); a misspelt one gets the nearest choice as a hint.

    Worded "'a' or 'b'" for two, else "one of 'a', 'b', 'c'" (`quote=False`: the choices bare);
    `fold` maps a value before it is compared and kept (e.g. str.upper for names in any case)."""
    options = tuple(choices)
    shown = [repr(c) if quote else c for c in options]
    expected = " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(shown)

    def parse(value: Any, base: Path | None = None) -> str:
        folded = fold(value) if fold is not None and isinstance(value, str) else value
        if not isinstance(folded, str) or folded not in options:
            raise Invalid(expected, hint=suggest(folded, options))
        return folded
    return parse


def regex(*, group: str = "") -> Validator:
    """A valid regular expression; given `group` (what it captures), one with at least one (group)."""

    def parse(value: Any, base: Path | None = None) -> str:
        string()(value)
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise Invalid(f"a valid regular expression ({exc})") from None
        if group and compiled.groups < 1:
            raise Invalid(f"a regular expression with one (group) {group}")
        return value
    return parse


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: Any, base: Path | None = None) -> float:
    """Seconds, from a positive number `value` or a string like '90m', '12h', '2d'; `base` is unused."""
    if _is_number(value) and value > 0:
        return float(value)
    m = _DURATION.match(value) if isinstance(value, str) else None
    if not m or float(m.group(1)) <= 0:
        raise Invalid("a positive number of seconds, or a string like '90m', '12h' or '2d'")
    return float(m.group(1)) * _UNIT[m.group(2)]


# ---------------------------------------------------------------------------------------------------- paths

#: mpimager's tokens whose value is an absolute path: a path starting with one is not made relative to its file
ABSOLUTE_TOKENS = ("$ms_in$", "$ms_dir$", "$run_dir$")
_ENV = re.compile(r"\$\{(\w+)\}|\$(\w+)(?!\w|\$)")


def expand(text: str, where: str) -> str:
    """`text` with `~` and `$VAR`/`${VAR}` expanded, `$token$` left alone; an unset variable is a ConfigError
    naming `where`."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable ${name} is not set")
        return os.environ[name]

    return os.path.expanduser(_ENV.sub(sub, text))


def resolve_path(text: str, base: Path, where: str) -> Path:
    """`text` expanded (see `expand`, errors naming `where`) and, when relative, joined to the folder `base`."""
    p = Path(expand(text, where))
    return p if p.is_absolute() else (base / p)


def _resolved(text: str, base: Path | None, keep: tuple[str, ...]) -> str:
    """`text` expanded and, when relative (and not starting with one of `keep`), joined to `base`; without
    a base only `~` is expanded."""
    if base is None:
        return os.path.expanduser(text)
    try:
        expanded = expand(text, "")
    except ConfigError as exc:
        raise Invalid(reason=str(exc).removeprefix(": ")) from None
    return expanded if expanded.startswith(keep) or os.path.isabs(expanded) else str(base / expanded)


def path(*, absolute: bool = False, keep: tuple[str, ...] = (), what: str = "a path string",
         as_path: bool = False) -> Validator:
    """A path string, resolved against the file that sets it (`~`, `$VAR`, relative to its folder).

    `absolute`: it must be absolute once resolved ('an absolute path'); `keep`: prefixes (mpimager's own
    tokens) that leave the text as it is; `what` words a value that is not a non-empty string; `as_path`:
    returned as a Path, else as a str."""

    def parse(value: Any, base: Path | None = None) -> str | Path:
        if isinstance(value, PurePath):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise Invalid(what)
        text = _resolved(value, base, keep)
        if absolute and not os.path.isabs(text):
            raise Invalid("an absolute path")
        return Path(text) if as_path else text
    return parse


# ---------------------------------------------------------------------------------------------------- combinators


def optional(validator: Validator, *, unset: tuple[Any, ...] = (None,)) -> Validator:
    """None (the option unset) for a value in `unset`, else `validator`'s value. TOML has no null: a key
    that a layer may unset takes `false` too (`unset=(None, False)`)."""

    def parse(value: Any, base: Path | None = None) -> Any:
        if any(value is u or (_is_number(value) and _is_number(u) and value == u) for u in unset):
            return None
        return validator(value, base)
    return parse


def either(*validators: Validator, what: str) -> Validator:
    """The value of the first of `validators` that takes it; `what` words a value none takes."""

    def parse(value: Any, base: Path | None = None) -> Any:
        for validator in validators:
            try:
                return validator(value, base)
            except Invalid:
                pass
        raise Invalid(what)
    return parse


def list_of(item: Validator, *, what: str, scalar: bool = False, nonempty: bool = False,
            unique: bool = False) -> Validator:
    """A list (kept as a tuple) whose elements `item` takes; `what` words the list expected.

    `scalar`: a single value stands for a list of one; `nonempty`: an empty list is refused; `unique`:
    repeated elements are kept once. An element refused with an expectation refuses the list as `what`
    (with the element's hint); elements refused with a reason give every reason."""

    def parse(value: Any, base: Path | None = None) -> tuple:
        items = [value] if scalar and not isinstance(value, (list, tuple)) else value
        if not isinstance(items, (list, tuple)) or (nonempty and not items):
            raise Invalid(what)
        out, reasons = [], []
        for element in items:
            try:
                out.append(item(element, base))
            except Invalid as exc:
                if not exc.reason:
                    raise Invalid(what, hint=exc.hint) from None
                reasons.append(exc.reason)
        if reasons:
            raise Invalid(reason="; ".join(reasons))
        return tuple(dict.fromkeys(out)) if unique else tuple(out)
    return parse


def numbers(count: int, *, what: str) -> Validator:
    """Exactly `count` numbers, as a tuple of floats; `what` words anything else."""

    def parse(value: Any, base: Path | None = None) -> tuple[float, ...]:
        if not isinstance(value, (list, tuple)) or len(value) != count or not all(_is_number(v) for v in value):
            raise Invalid(what)
        return tuple(float(v) for v in value)
    return parse


# ---------------------------------------------------------------------------------------------------- tables

#: how an unknown key is worded: after the table (as [reduce] and [mosaic] always did)
AFTER_TABLE = "{where} unknown key '{key}'{near}"
#: ... as the text of the table's location (the plain sections of the loader)
OF_TABLE = "{where}: unknown key '{key}'{near}"
#: ... at the key's location, like a wrong value ([container])
AT_KEY = "{where} {key}: unknown key{near}"


@dataclass(frozen=True)
class Section:
    """The keys of one TOML table, each with its validator: the table's whole schema, declared once.

    `keys`: key -> validator; `other`: the validator of any other key (open tables such as [wsclean]),
    None: another key is unknown; `foreign`: keys of the tools mpimager replaces -> what to do instead;
    `unknown`: the wording of an unknown key (AFTER_TABLE, OF_TABLE or AT_KEY: each section keeps the one its
    users know); `together`: checks over the whole table (after layers merge), each yielding (key, message)."""

    keys: Mapping[str, Validator]
    other: Validator | None = None
    foreign: Mapping[str, str] = field(default_factory=dict)
    unknown: str = AFTER_TABLE
    together: tuple[Callable[[Mapping[str, Any]], Iterable[tuple[str, str]]], ...] = ()

    def read(self, table: Mapping[str, Any], where: str, problems: Problems, base: Path | None = None) -> dict:
        """The parsed values of `table`'s valid keys; every problem goes to `problems`, worded
        'WHERE key: ...' with `where` naming file and table ('FILE: [reduce]'); paths resolve against `base`."""
        out = {}
        for key, value in table.items():
            validator = self.keys.get(key, self.other)
            if key in self.foreign:
                problems.add(f"{where} {key}", self.foreign[key])
            elif validator is None:
                problems.add_line(self.unknown.format(where=where, key=key, near=suggest(key, self.keys)))
            else:
                try:
                    out[key] = validator(value, base)
                except Invalid as exc:
                    problems.add(f"{where} {key}", exc.render(value))
        return out

    def check_together(self, table: Mapping[str, Any], where: str, problems: Problems,
                       refused: Iterable[str] = ()) -> None:
        """Run the `together` checks over the parsed (merged) `table`, into `problems` worded 'WHERE key: ...'
        with `where` naming file and table; none about a key in `refused` (a value already reported wrong)."""
        skip = set(refused)
        for check in self.together:
            for key, message in check(table):
                if key not in skip:
                    problems.add(f"{where} {key}", message)

    def parse(self, table: Mapping[str, Any], where: str) -> dict:
        """`table` read and checked together, or one ConfigError naming `where` and every problem."""
        problems = Problems()
        values = self.read(table, where, problems)
        self.check_together(values, where, problems, refused=set(table) - set(values))
        problems.raise_if_any()
        return values

    def normalise(self, options: Any, where: str) -> None:
        """Re-check the fields of a frozen dataclass `options` built in code and store their parsed form
        (e.g. a list as a tuple); one ConfigError naming `where` and every bad field."""
        values = self.parse({f.name: getattr(options, f.name) for f in fields(options) if f.name in self.keys}, where)
        for key, value in values.items():
            if value != getattr(options, key) or type(value) is not type(getattr(options, key)):
                object.__setattr__(options, key, value)


def table_of(options: Any) -> dict[str, Any]:
    """Every field of the frozen option dataclass `options` as its TOML/JSON table (tuples as lists): what a
    run's job receives whole, so that `Cls.from_mapping(table_of(o)) == o`."""
    return {f.name: list(x) if isinstance(x := getattr(options, f.name), tuple) else x for f in fields(options)}
