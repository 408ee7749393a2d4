"""Runs one command-line tool many times, each in a forked child (test helper, not a test).

    python tests/cli_driver.py MODULE '[[argv0, arg, ...], ...]'  ->  prints [{"rc", "output"}, ...] as JSON

The parent imports jax and the tool once (no backend is started before the forks), so each case
costs a fork instead of a fresh interpreter. A child's stdout and stderr go to one pipe.
"""

import importlib
import json
import os
import sys
import traceback

import jax  # noqa: F401  (imported once, before forking)

module, cases = sys.argv[1], json.loads(sys.argv[2])
tool = importlib.import_module(module)
if hasattr(tool, "_define_flags"):
    tool._define_flags()


def _child(argv):
    from absl import app

    sys.argv = list(argv)
    try:
        if hasattr(tool, "run_main"):
            tool.run_main()
        else:
            result = app.run(tool.main)
            sys.exit(result)
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 99


results = []
for argv in cases:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.dup2(write, 1)
        os.dup2(write, 2)
        code = _child(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "r", errors="replace") as f:
        output = f.read()
    _, status = os.waitpid(pid, 0)
    results.append({"rc": os.waitstatus_to_exitcode(status), "output": output})
print("CLI_RESULTS " + json.dumps(results))
