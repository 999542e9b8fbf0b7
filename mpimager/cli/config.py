"""Print a config as resolved, each key with the file that set it: `mpimager config CONFIG`.

The layers, bottom to top: the packaged defaults, the `default_settings` chain, CONFIG. Each table's keys are
printed as TOML (paths resolved, `$VAR`s expanded) with the layer that set them; the output is a valid config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mpimager.config.load import Config, load_config


def add_arguments(parser):
    """Add the `mpimager config` arguments to `parser` (main.build_parser adds the output options)."""
    parser.add_argument("config", help="the TOML config file")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def format_layers(config: Config) -> str:
    """The resolved tables of `config` as TOML, each key followed by `# FILE` naming the layer that set it."""
    lines = ["# layers, bottom to top:"] + [f"#   {p}" for p in config.layers]
    for table, values in config.resolved.items():
        groups = values.items() if table == "passes" else [(None, values)]
        for name, keys in groups:
            header = f"passes.{name}" if name is not None else table
            lines.append(f"\n[{header}]")
            width = max((len(f"{k} = {_toml(v)}") for k, v in keys.items()), default=0)
            for key, value in keys.items():
                origin = config.origins.get(f"{header} {key}")
                text = f"{json.dumps(key) if not key.replace('-', '').replace('_', '').isalnum() else key} = " \
                       f"{_toml(value)}"
                lines.append(f"{text:<{width}}  # {Path(origin).name if origin else '?'}")
    return "\n".join(lines) + "\n"


def run(args) -> int:
    """Print the config `args.config` as resolved (`format_layers`); exit code 0."""
    print(format_layers(load_config(args.config)), end="")
    return 0
