"""CPU forward of our DiT side by side with the official PyTorch `StepVideoModel`, in one run.

    python -m benchmarks.cpu_forward
    python -m benchmarks.cpu_forward --official_repo=PATH [--torch_python=PY]

Config: 16 heads x 128 (width 2048), 4 layers, TI2V input (64 latent channels, patch 1, 128 into the
patch embed: [noisy | condition]), 3x16x16 latents (768 tokens), CFG batch 2, 48 Step-LLM + 16 CLIP
text tokens (caption channels 1024 / 256), float32.

Each variant runs in its own worker process (so the two runtimes' thread pools never share a process),
built and warmed up once; the driver then asks them in turn (A B A B ...) for `--repeats` forwards per
round and reports per-variant medians over all timed forwards, the ratios of those medians, and the
load average before and after (the machine may be shared).

`--official_repo` is a user's checkout of github.com/stepfun-ai/Step-Video-TI2V; it is imported at run
time (its modules only: the package `__init__` and `stepvideo.parallel` need xfuser, which one CPU
process does not use) and needs torch, einops and diffusers in `--torch_python` (default: this
interpreter). Its random weights and inputs are handed to our workers through a temporary .npz, so both
sides compute the same forward, and the table states our max |difference| to its output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HEADS, HEAD_DIM, LAYERS = 16, 128, 4
F, H, W, C = 3, 16, 16, 64
BATCH = 2
LLM_TOKENS, CLIP_TOKENS = 48, 16
CAPTION_CHANNELS = (1024, 256)
TIMESTEP, MOTION_SCORE = 0.5, 5.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------- workers
def _serve(setup) -> None:
    """Worker loop: `setup()` -> (forward callable that blocks until done, info dict); then answers
    "RUN n" with the wall seconds of n forwards, until "QUIT"."""
    forward, info = setup()
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "QUIT":
            return
        times = []
        for _ in range(int(cmd[1])):
            t0 = time.perf_counter()
            forward()
            times.append(time.perf_counter() - t0)
        print("TIMES " + json.dumps(times), flush=True)


def _import_official(repo: str):
    """The official model class, from the checkout's modules (its package `__init__` and
    `stepvideo.parallel`, which need xfuser, are replaced by the little that one process needs)."""
    import importlib.util
    import types

    pkg_dir = os.path.join(repo, "stepvideo")
    if not os.path.isfile(os.path.join(pkg_dir, "modules", "model.py")):
        raise SystemExit(
            f"--official_repo must be a Step-Video-TI2V checkout with stepvideo/modules/model.py; got {repo!r}"
        )
    sys.path.insert(0, repo)
    pkg = types.ModuleType("stepvideo")
    pkg.__path__ = [pkg_dir]
    sys.modules["stepvideo"] = pkg
    parallel = types.ModuleType("stepvideo.parallel")  # no sequence parallelism in one process
    parallel.get_sequence_parallel_world_size = lambda: 1
    parallel.get_sequence_parallel_rank = lambda: 0
    parallel.parallel_forward = lambda fn: fn  # the model runs with parallel=False
    sys.modules["stepvideo.parallel"] = parallel
    # stepvideo.utils' __init__ also pulls video I/O (imageio); the model needs only utils/utils.py.
    spec = importlib.util.spec_from_file_location("stepvideo.utils", os.path.join(pkg_dir, "utils", "utils.py"))
    utils = importlib.util.module_from_spec(spec)
    sys.modules["stepvideo.utils"] = utils
    spec.loader.exec_module(utils)
    from stepvideo.modules.model import StepVideoModel

    return StepVideoModel


def _official_worker(a) -> None:
    def setup():
        import torch

        model_cls = _import_official(a.official_repo)
        torch.manual_seed(0)
        model = model_cls(
            num_attention_heads=HEADS,
            attention_head_dim=HEAD_DIM,
            in_channels=C,
            out_channels=C,
            num_layers=LAYERS,
            use_additional_conditions=True,
            caption_channels=list(CAPTION_CHANNELS),
            attention_type="torch",
        ).eval()
        with torch.no_grad():  # the release builds with empty init: fill every weight
            for name, p in model.named_parameters():
                if p.ndim >= 2:
                    p.copy_(torch.randn_like(p) * (p[0].numel() ** -0.5))
                elif name.endswith("weight"):
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
        g = np.random.default_rng(0)
        x = g.standard_normal((BATCH, F, C, H, W), np.float32)  # release layout [B, F, C, H, W]
        cond = g.standard_normal((BATCH, F, C, H, W), np.float32)
        llm = g.standard_normal((BATCH, LLM_TOKENS, CAPTION_CHANNELS[0]), np.float32)
        clip = g.standard_normal((BATCH, CLIP_TOKENS, CAPTION_CHANNELS[1]), np.float32)
        mask = np.ones((BATCH, CLIP_TOKENS + LLM_TOKENS), np.float32)
        t = np.full((BATCH,), TIMESTEP, np.float32)
        args = dict(
            hidden_states=torch.from_numpy(x),
            encoder_hidden_states=torch.from_numpy(llm),
            encoder_hidden_states_2=torch.from_numpy(clip),
            timestep=torch.from_numpy(t),
            encoder_attention_mask=torch.from_numpy(mask),
            condition_hidden_states=torch.from_numpy(cond),
            motion_score=MOTION_SCORE,
            return_dict=False,
        )

        def forward():
            with torch.inference_mode():
                return model(**args)

        out = forward()
        weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        np.savez(
            a.exchange,
            **{"w/" + k: v for k, v in weights.items()},
            x=x,
            cond=cond,
            llm=llm,
            clip=clip,
            mask=mask,
            t=t,
            out=out.numpy(),
        )
        for _ in range(a.warmup):
            forward()
        info = dict(threads=torch.get_num_threads(), version=torch.__version__)
        return forward, info

    _serve(setup)


def _ours_worker(a) -> None:
    def setup():
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from stepvideo_jax.convert.core import build_model
        from stepvideo_jax.convert.dit import convert_dit
        from stepvideo_jax.dit import DiTConfig, StepVideoDiT

        cfg = DiTConfig(
            num_heads=HEADS,
            head_dim=HEAD_DIM,
            num_layers=LAYERS,
            in_channels=C,
            out_channels=C,
            caption_channels=CAPTION_CHANNELS,
            attention_kernel=a.kernel,
        )
        ref = None
        if a.exchange:  # the official worker's weights and inputs
            z = np.load(a.exchange)
            weights = {k[2:]: z[k] for k in z.files if k.startswith("w/")}
            model = build_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), convert_dit(weights, cfg))
            x, cond = (np.moveaxis(z[k], 2, -1) for k in ("x", "cond"))  # -> [B, F, H, W, C]
            llm, clip, mask, t = z["llm"], z["clip"], z["mask"], z["t"]
            ref = np.moveaxis(z["out"], 2, -1)
        else:
            model = StepVideoDiT(cfg, rngs=nnx.Rngs(0))
            g = np.random.default_rng(0)
            x = g.standard_normal((BATCH, F, H, W, C), np.float32)
            cond = g.standard_normal((BATCH, F, H, W, C), np.float32)
            llm = g.standard_normal((BATCH, LLM_TOKENS, CAPTION_CHANNELS[0]), np.float32)
            clip = g.standard_normal((BATCH, CLIP_TOKENS, CAPTION_CHANNELS[1]), np.float32)
            mask = np.ones((BATCH, CLIP_TOKENS + LLM_TOKENS), np.float32)
            t = np.full((BATCH,), TIMESTEP, np.float32)
        graphdef, state = nnx.split(model)
        inputs = [jnp.asarray(v) for v in (x, t, llm, mask, clip, cond)]

        @jax.jit
        def fwd(state, x, t, llm, mask, clip, cond):
            return nnx.merge(graphdef, state).forward(x, t, llm, mask, clip, cond, MOTION_SCORE)

        def forward():
            return jax.block_until_ready(fwd(state, *inputs))

        out = np.asarray(forward())
        for _ in range(a.warmup):
            forward()
        info = dict(version=jax.__version__, xla_flags=os.environ.get("XLA_FLAGS", ""))
        if ref is not None:
            info["max_abs_diff"] = float(np.max(np.abs(out - ref)))
            info["ref_max_abs"] = float(np.max(np.abs(ref)))
        return forward, info

    _serve(setup)


# ---------------------------------------------------------------------------------------------- driver
class _Worker:
    def __init__(self, label: str, cmd: list[str], env: dict[str, str]):
        self.label, self.times = label, []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.info = json.loads(self._expect("READY"))

    def _expect(self, tag: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1 :]
        raise SystemExit(f"worker {self.label!r} exited (code {self.proc.wait()}) before answering {tag}")

    def run(self, n: int) -> None:
        self.proc.stdin.write(f"RUN {n}\n")
        self.proc.stdin.flush()
        self.times += json.loads(self._expect("TIMES"))

    def close(self) -> None:
        self.proc.stdin.write("QUIT\n")
        self.proc.stdin.close()
        self.proc.wait()


def _variants(a, exchange: str | None) -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, command, environment) of every worker, the official one first (it writes the exchange file)."""
    me = os.path.abspath(__file__)
    base = [f"--warmup={a.warmup}"] + ([f"--exchange={exchange}"] if exchange else [])
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = []
    if a.official_repo:
        cmd = [a.torch_python, me, "--worker=official", f"--official_repo={os.path.abspath(a.official_repo)}"]
        out.append(("official PyTorch", cmd + base, env))
    for kernel in a.kernels.split(","):
        cmd = [sys.executable, me, "--worker=ours", f"--kernel={kernel}"] + base
        out.append((f"ours, attention_kernel={kernel}", cmd, env))
        for flags in a.xla_flags:
            flagged = dict(env, XLA_FLAGS=(env.get("XLA_FLAGS", "") + " " + flags).strip())
            out.append((f"ours, attention_kernel={kernel}, XLA_FLAGS={flags}", cmd, flagged))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official_repo", default="", help="checkout of stepfun-ai/Step-Video-TI2V (optional)")
    p.add_argument("--torch_python", default=sys.executable, help="interpreter with torch, einops, diffusers")
    p.add_argument("--kernels", default="xla,chunked", help="our attention kernels to time, comma-separated")
    p.add_argument("--xla_flags", action="append", default=[], help="extra XLA_FLAGS variant of ours (repeatable)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="forwards per worker per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--worker", choices=("ours", "official"), help=argparse.SUPPRESS)
    p.add_argument("--kernel", default="xla", help=argparse.SUPPRESS)
    p.add_argument("--exchange", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker == "official":
        return _official_worker(a)
    if a.worker == "ours":
        return _ours_worker(a)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        exchange = os.path.join(tmp, "official.npz") if a.official_repo else None
        workers = []
        for label, cmd, env in _variants(a, exchange):
            workers.append(_Worker(label, cmd, env))  # one at a time: each builds, compiles, warms up
        for _ in range(a.rounds):  # interleaved: A B A B ...
            for w in workers:
                w.run(a.repeats)
        for w in workers:
            w.close()
    load_after = os.getloadavg()

    from benchmarks.common import machine_description, md_table

    base = statistics.median(workers[0].times)
    rows = []
    for w in workers:
        med = statistics.median(w.times)
        diff = w.info.get("max_abs_diff")
        rows.append(
            [
                w.label,
                f"{med * 1e3:.0f}",
                f"{min(w.times) * 1e3:.0f}",
                f"{max(w.times) * 1e3:.0f}",
                f"{med / base:.2f}",
                "" if diff is None else f"{diff:.1e} (of max {w.info['ref_max_abs']:.1f})",
            ]
        )
    print(f"Machine: {machine_description()}\n")
    print(
        f"DiT forward: {HEADS} heads x {HEAD_DIM}, {LAYERS} layers, TI2V latents {F}x{H}x{W}x{C} "
        f"({F * H * W} tokens), CFG batch {BATCH}, {LLM_TOKENS}+{CLIP_TOKENS} text tokens, float32; "
        f"{a.rounds} interleaved rounds x {a.repeats} forwards per variant after {a.warmup} warm-up\n"
    )
    print(
        f"load average (1/5/15 min) before: {' '.join(f'{v:.2f}' for v in load_before)}, "
        f"after: {' '.join(f'{v:.2f}' for v in load_after)}\n"
    )
    if a.official_repo:
        print(f"official: torch {workers[0].info['version']}, {workers[0].info['threads']} threads\n")
    header = ["variant", "ms (median)", "min", "max", f"/ {workers[0].label}", "max |ours - official|"]
    print(md_table(header, rows))


if __name__ == "__main__":
    main()
