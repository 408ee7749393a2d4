"""Batch generation vs separate runs: N videos from one `sample.py --config.prompts=FILE.jsonl` run
(model loaded and compiled once) against N separate `sample.py` runs (each loads and compiles).

    python -m benchmarks.batch --config=demo --videos=8

Both use the same N (image, prompt, seed) items and the sampling config's other fields; times are
wall-clock seconds of the whole process (start to exit), measured one after the other in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "stepvideo_jax", "demo", "examples")


def _items(n: int) -> list[dict]:
    images = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".png"))
    prompts = [
        "a large red circle moves right",
        "a small white square moves up",
        "a green triangle moves left",
        "a blue circle moves down",
    ]
    return [
        {"image": os.path.join(EXAMPLES, images[i % len(images)]), "prompt": prompts[i % len(prompts)], "seed": 100 + i}
        for i in range(n)
    ]


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, os.path.join(REPO, "sample.py"), *args],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="demo")
    p.add_argument("--videos", type=int, default=8)
    a = p.parse_args()
    items = _items(a.videos)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        prompts = os.path.join(tmp, "prompts.jsonl")
        with open(prompts, "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in items)
        common = [f"--config={a.config}", "--config.progress=false"]
        batch = _run([*common, f"--config.prompts={prompts}", f"--config.output_dir={tmp}/batch"])
        print(f"# batch of {a.videos}: {batch:.1f}s", file=sys.stderr, flush=True)
        separate = []
        for i, x in enumerate(items):
            separate.append(
                _run(
                    [
                        *common,
                        f"--config.image={x['image']}",
                        f"--config.prompt={x['prompt']}",
                        f"--config.seed={x['seed']}",
                        f"--config.output_dir={tmp}/separate",
                    ]
                )
            )
            print(f"# separate run {i + 1}: {separate[-1]:.1f}s", file=sys.stderr, flush=True)
    load_end = os.getloadavg()
    total = sum(separate)
    print(f"| videos | one batch run (s) | {a.videos} separate runs (s) | separate / batch |")
    print("|---|---|---|---|")
    print(f"| {a.videos} | {batch:.1f} | {total:.1f} | {total / batch:.2f}x |")
    print()
    print(
        f"Separate runs: {', '.join(f'{s:.1f}' for s in separate)} s each (config `{a.config}`, "
        f"{os.cpu_count()} CPU cores, shared machine)."
    )
    print()
    print(
        "Load average (1, 5, 15 min) at start "
        + ", ".join(f"{x:.2f}" for x in load_start)
        + "; at end "
        + ", ".join(f"{x:.2f}" for x in load_end)
        + "."
    )


if __name__ == "__main__":
    main()
