"""Runs the converter CLI with a hook that stops it mid-conversion (test helper, not a test).

    python tests/convert_fault_driver.py MARKER [convert flags...]

After the first component's parameters are written, the hook creates MARKER and sleeps, so the test
can kill the process while the staging folder is half full (and, with --overwrite, before the swap).
"""

import sys
import time

from stepvideo_jax import checkpoint
from stepvideo_jax.tools import convert

marker = sys.argv[1]
_real_save = checkpoint.save_params


def _save_then_pause(path, arrays):
    _real_save(path, arrays)
    with open(marker, "w") as f:
        f.write("saved")
    time.sleep(120)


checkpoint.save_params = _save_then_pause
sys.argv = ["convert"] + sys.argv[2:]
convert.run_main()
