"""Parity of our networks against the reference fixtures made with the released PyTorch code.

    python -m stepvideo_jax.tools.parity PREFIX [PREFIX ...]

PREFIX is a fixture path without its suffix (`../shared/fixtures/reference/dit_ti2v`). Each fixture's
weights go through the same converter users run; one line per checked output:
`NAME max_abs=... rel_l2=... ok|FAIL`. Exit 0 only if every output has rel_l2 <= 1e-4; exit 2 for an
unknown kind or a malformed fixture (or no PREFIX). Flags are parsed by absl (`--help` lists them).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app

from stepvideo_jax.convert.core import ConversionError
from stepvideo_jax.parity import KINDS, TOLERANCE, FixtureError, check_fixture, compare

__all__ = ["KINDS", "check_fixture", "check_prefixes", "compare", "main", "TOLERANCE"]


def check_prefixes(prefixes: Sequence[str]) -> int:
    """Checks every fixture, printing one line per output; returns the exit status (0 all within
    TOLERANCE, 1 some output outside it, 2 an unknown kind or a malformed fixture)."""
    ok = True
    for prefix in prefixes:
        try:
            results = check_fixture(prefix)
        except (FixtureError, ConversionError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (ValueError, TypeError, KeyError) as e:  # a config value the network cannot take ("two" layers)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            print(f"error: {prefix}.json: malformed fixture config ({type(e).__name__}: {reason})", file=sys.stderr)
            return 2
        for name, max_abs, rel in results:
            good = rel <= TOLERANCE
            ok &= good
            print(f"{prefix}:{name} max_abs={max_abs:.3e} rel_l2={rel:.3e} {'ok' if good else 'FAIL'}")
    return 0 if ok else 1


def main(argv: Sequence[str]) -> int:
    """absl entry point: argv[0] is the program, the rest are fixture prefixes."""
    if len(argv) < 2:
        raise app.UsageError("give at least one fixture PREFIX", exitcode=2)
    return check_prefixes(argv[1:])


if __name__ == "__main__":
    app.run(main)
