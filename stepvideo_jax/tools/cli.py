"""What every command-line tool shares: absl flags with a packaged `--config`, one-line errors, quiet logs.

`run(main, config_flag="config")` is `absl.app.run` with a flags parser that resolves the config
flag's value (`ti2v:tiny`, `configs/demo.py`, or a file path; see `stepvideo_jax.configs`) and turns
a bad value or an unknown `--config.FIELD` into one line (exit 2) naming the nearest fields.
`--config.help` prints every field of the config with its default and meaning, and exits.

Logs are quiet unless asked for: without `--verbosity` (absl's; e.g. `--verbosity=1`), only warnings
and errors are logged (Orbax's per-array INFO lines, JAX's backend probing and the transformers
"PyTorch was not found" advice are hidden), so a run prints its progress bars, output paths and timings.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from stepvideo_jax import configs

__all__ = ["run", "parse_flags", "usage_error", "raise_interrupt_on_sigterm", "quiet_logs"]


def usage_error(message: str) -> None:
    """One line on stderr, exit code 2 (a usage error)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _unknown_field(argv: Sequence[str], config_flag: str) -> str | None:
    """The first `--CONFIG.FIELD=...` whose FIELD the loaded config does not have, with the nearest names."""
    holder = flags.FLAGS[config_flag]
    config = holder.value
    for arg in argv:
        m = re.match(rf"^--?(?:no)?{config_flag}\.([\w.]+)", arg)
        if not m:
            continue
        node, ok = config, True
        for part in m.group(1).split("."):
            if hasattr(node, "keys") and part in node.keys():
                node = node[part]
            else:
                ok = False
                break
        if not ok:
            near = configs.nearest_names(m.group(1), config)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            return f"unknown config field {m.group(1)!r}{hint}"
    return None


def _verbosity_given(argv: Sequence[str]) -> bool:
    return any(re.match(r"^--?(verbosity|v)(=|$)", a) for a in argv[1:])


def quiet_logs() -> None:
    """Hides INFO logs and library advice (before JAX, Orbax or transformers start talking)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # XLA/TSL C++ INFO and WARNING lines
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # absl's handler logs at the root logger's level; JAX and Orbax log through Python logging.
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("jax", "absl", "orbax"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _print_config_help(argv: Sequence[str], config_flag: str) -> bool:
    """`--CONFIG.help` (or `--CONFIG.help=true`): prints the config's fields; True when it did."""
    wanted = [a for a in argv[1:] if re.match(rf"^--?{config_flag}\.help(=(true|True|1))?$", a)]
    if not wanted:
        return False
    from stepvideo_jax.tools import config as config_tool

    rest = [a for a in argv if a not in wanted]
    sys.argv = [a for a in sys.argv if a not in wanted]  # ml_collections reads its overrides from sys.argv too
    flags.FLAGS(rest)
    print(config_tool.describe(flags.FLAGS[config_flag].value, config_tool.field_comments()))
    return True


def parse_flags(argv: Sequence[str], config_flag: str = "config") -> list[str]:
    try:
        argv = configs.rewrite_config_argv(argv, config_flag)
    except ValueError as e:
        usage_error(str(e))
    if not _verbosity_given(argv):
        quiet_logs()
    try:
        if config_flag in flags.FLAGS and _print_config_help(argv, config_flag):
            sys.exit(0)
        return flags.FLAGS(argv)
    except flags.Error as e:
        if config_flag in flags.FLAGS and flags.FLAGS[config_flag].present:
            unknown = _unknown_field(argv, config_flag)
            if unknown:
                usage_error(unknown)
        usage_error(str(e).splitlines()[0])
    except (KeyError, AttributeError, TypeError, ValueError) as e:  # ml_collections: a bad override
        text = str(e).replace("\\n", "\n").replace("\\'", "'")
        m = re.search(r"'(\w+)'\W*Did you mean \"([\w.]+)\"", text)
        if m:
            usage_error(f"unknown config field {m.group(1)!r}; did you mean {m.group(2)!r}?")
        m = re.fullmatch(r"\W*'?(\w+)'?\W*", text)
        if m:
            usage_error(f"unknown config field {m.group(1)!r}")
        usage_error(f"bad --{config_flag} override: {text.strip(chr(39)).splitlines()[0]}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def raise_interrupt_on_sigterm() -> None:
    """SIGTERM (what `timeout`, SLURM and Kubernetes send) is handled as Ctrl-C: a KeyboardInterrupt,
    so every `finally` and cleanup runs; call from the main thread."""
    signal.signal(signal.SIGTERM, _interrupt)


def _guarded(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
    def guarded(argv):
        raise_interrupt_on_sigterm()
        try:
            return main(argv)
        except KeyboardInterrupt as e:
            name = str(e) or "SIGINT"
            print(f"error: interrupted ({name}); temporary files removed, nothing half-written left", file=sys.stderr)
            sys.exit(130 if name == "SIGINT" else 143)

    return guarded


def run(main: Callable[[list[str]], int | None], config_flag: str = "config") -> None:
    """absl's app.run with the packaged-config flags parser; SIGINT/SIGTERM end with one line; library
    INFO logs hidden unless --verbosity is given."""
    quiet = not _verbosity_given(sys.argv)

    def main_quiet(argv):
        if quiet:  # absl.app.run has set the log level from --verbosity (INFO by default) by now
            quiet_logs()
        return main(argv)

    app.run(_guarded(main_quiet), flags_parser=lambda argv: parse_flags(argv, config_flag))
