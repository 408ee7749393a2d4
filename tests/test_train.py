"""Training on the CPU with a tiny DiT: precompute -> grain -> sharded step -> Orbax, end to end.

The tiny model is the `tiny` variant of configs/train_ti2v.py (2 layers, 2 heads x 32, 8 latent channels).
A stand-in VAE (16x16 average pooling + a fixed channel projection, 17 frames -> 3 latent frames) and a
stand-in prompt encoder (hashing) let precompute run on generated videos without real weights.
"""

import dataclasses
import hashlib
import json
import os

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.config import dataclass_from
from stepvideo_jax.configs import get_config
from stepvideo_jax.dit import DIT_SHARDING, DiTConfig, StepVideoDiT
from stepvideo_jax.sharding import MeshConfig, make_mesh
from stepvideo_jax.tools.precompute import precompute
from stepvideo_jax.training import ObjectiveConfig, OptimConfig, Trainer, widen_t2v_to_ti2v
from stepvideo_jax.training.encode import ClipEncoder
from stepvideo_jax.training.loop import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config() -> ml_collections.ConfigDict:
    return get_config("train_ti2v:tiny")


TINY = _tiny_config()
DIT = DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.model.items()})
C, L_LLM, L_CLIP = DIT.in_channels, 8, 5


class _PoolVAE:
    """Stand-in VAE: (b, f, 3, H, W) -> (b, f', C, H/16, W/16); frame 0 alone, then chunks of 8 frames."""

    def __init__(self):
        self.proj = np.random.default_rng(0).standard_normal((3, C)).astype(np.float32)

    def encode(self, video, rng=None):
        v = np.asarray(video, np.float32)  # (b, f, 3, H, W)
        b, f, _, h, w = v.shape
        pooled = v.reshape(b, f, 3, h // 16, 16, w // 16, 16).mean(axis=(4, 6))  # (b, f, 3, h', w')
        chunks = [pooled[:, :1]] + [pooled[:, i : i + 8].mean(1, keepdims=True) for i in range(1, f, 8)]
        lat = np.concatenate(chunks, axis=1)  # (b, f', 3, h', w')
        return jnp.asarray(np.einsum("bfchw,cd->bfdhw", lat, self.proj))


class _HashPrompts:
    def encode_prompts(self, prompts):
        llm = np.zeros((len(prompts), L_LLM, DIT.caption_channels[0]), np.float32)
        mask = np.zeros((len(prompts), L_LLM), np.int32)
        clip = np.zeros((len(prompts), L_CLIP, DIT.caption_channels[1]), np.float32)
        for i, p in enumerate(prompts):
            words = (p.split() or [""])[:L_LLM]
            for j, word in enumerate(words):
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
                llm[i, j] = np.random.default_rng(seed).standard_normal(llm.shape[-1])
            mask[i, : len(words)] = 1
            clip[i] = llm[i, :L_CLIP, : clip.shape[-1]]
        # As PromptEncoder: the model's mask, CLIP ones then the LLM mask.
        return llm, np.concatenate([np.ones((len(prompts), L_CLIP), np.int32), mask], axis=1), clip


def _write_video(path, frames=20, height=40, width=40, seed=0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (width, height))
    color = np.random.default_rng(seed).integers(60, 255, 3).tolist()
    for i in range(frames):
        f = np.full((height, width, 3), 20, np.uint8)
        cv2.rectangle(f, (2 * i % width, 8), (2 * i % width + 10, 18), color, -1)
        writer.write(f)
    writer.release()


@pytest.fixture(scope="module")
def latents_dir(tmp_path_factory):
    """Precomputed latents of 6 generated videos (one bucket) + one too-short video (skipped)."""
    root = tmp_path_factory.mktemp("train_data")
    rows = []
    for i in range(6):
        _write_video(root / f"v{i}.avi", seed=i)
        rows.append({"video": f"v{i}.avi", "caption": f"a square number {i}", "motion_score": 2.0 + i})
    _write_video(root / "short.avi", frames=9)
    rows.append({"video": "short.avi", "caption": "short"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "latents"
    encoder = ClipEncoder(_PoolVAE(), _HashPrompts(), ObjectiveConfig())
    counts = precompute(
        str(root / "manifest.jsonl"), str(out), encoder, num_frames=17, frame_stride=1, buckets=((32, 32),)
    )
    assert counts == {"written": 6, "skipped_too_short": 1}
    return out


def _run_config(latents_dir, steps, **data):
    cfg = _tiny_config()
    cfg.data.update(manifest=str(latents_dir / "index.jsonl"), kind="latents", buckets=((32, 32),), **data)
    cfg.train.update(steps=steps, log_every=1)
    cfg.checkpoint.update(every=2, keep=3, async_save=True)
    return cfg


def test_precompute_writes_arrays(latents_dir):
    rows = [json.loads(line) for line in (latents_dir / "index.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    with np.load(latents_dir / rows[0]["latents"]) as z:
        assert z["latents"].shape == (3, 2, 2, C) and z["condition"].shape == (1, 2, 2, C)
        assert z["llm_states"].shape == (L_LLM, 16) and z["llm_mask"].shape == (L_LLM,)
        assert z["clip_states"].shape == (L_CLIP, 12) and float(z["motion_score"]) == rows[0]["motion_score"]
    with np.load(latents_dir / "null_prompt.npz") as z:
        assert z["llm_mask"].sum() == 1  # the empty prompt


@pytest.fixture(scope="module")
def full_run(latents_dir, tmp_path_factory):
    """An uninterrupted 6-step run (the reference of the resume tests)."""
    root = tmp_path_factory.mktemp("full_run")
    return train(_run_config(latents_dir, 6), str(root / "full"), progress=False), root


def test_resume_is_bit_identical_and_nan_stops(latents_dir, tmp_path, full_run):
    full, root = full_run
    assert sorted(full.losses) == list(range(6)) and all(np.isfinite(list(full.losses.values())))
    assert "1 items skipped" not in full.data_summary  # precompute already dropped the short video

    part = train(_run_config(latents_dir, 3), str(tmp_path / "part"), progress=False)
    assert part.final_step == 3
    resumed = train(_run_config(latents_dir, 6), str(tmp_path / "part"), progress=False)
    assert sorted(resumed.losses) == [3, 4, 5]
    for step in range(6):  # the interrupted run sees the same losses, bit for bit
        got = part.losses.get(step, resumed.losses.get(step))
        assert got == full.losses[step], (step, got, full.losses[step])
    assert (root / "full" / "tensorboard").is_dir()

    # A non-finite batch at step 2 stops the run naming step 2; the checkpoint of step 2 is kept.
    rows = [json.loads(line) for line in (latents_dir / "index.jsonl").read_text().splitlines()]
    with np.load(latents_dir / rows[0]["latents"]) as z:
        bad = {k: z[k] for k in z.files}
    bad["latents"] = np.full_like(bad["latents"], np.nan)
    np.savez(latents_dir / "bad.npz", **bad)
    nan_index = latents_dir / "nan_index.jsonl"
    bad_rows = rows[:4] + [dict(rows[0], latents="bad.npz")] * 2
    nan_index.write_text("".join(json.dumps(r) + "\n" for r in bad_rows))
    cfg = _run_config(latents_dir, 6, shuffle=False)
    cfg.data.manifest = str(nan_index)
    cfg.data.null_prompt = str(latents_dir / "null_prompt.npz")
    with pytest.raises(FloatingPointError, match="at step 2; stopping; the last good checkpoint is step 2"):
        train(cfg, str(tmp_path / "nan"), progress=False)
    steps = sorted(int(p) for p in os.listdir(tmp_path / "nan" / "checkpoints") if p.isdigit())
    assert max(steps) == 2


def test_online_encoding_from_raw_videos(latents_dir, tmp_path):
    """data.kind='video': clips decoded by grain, encoded in the loop (noise-augmented first frame)."""
    cfg = _run_config(latents_dir, 2)
    cfg.data.update(manifest=str(latents_dir.parent / "manifest.jsonl"), kind="video", null_prompt="")
    result = train(
        cfg,
        str(tmp_path / "online"),
        progress=False,
        make_encoder=lambda objective: ClipEncoder(_PoolVAE(), _HashPrompts(), objective),
    )
    assert sorted(result.losses) == [0, 1] and all(np.isfinite(list(result.losses.values())))
    assert "(too_short: 1)" in result.data_summary


def _fixed_batch(batch_size=TINY.data.batch_size):
    """A batch shaped like the loop's (so the compiled steps are shared with the loop test)."""
    r = np.random.default_rng(0)
    batch = dict(
        latents=r.standard_normal((batch_size, 3, 2, 2, C), np.float32),
        condition=r.standard_normal((batch_size, 1, 2, 2, C), np.float32),
        llm_states=r.standard_normal((batch_size, L_LLM, 16), np.float32),
        llm_mask=np.tile((np.arange(L_LLM) < 5).astype(np.int32), (batch_size, 1)),
        clip_states=r.standard_normal((batch_size, L_CLIP, 12), np.float32),
        motion_score=np.linspace(1, 8, batch_size).astype(np.float32),
    )
    null = dict(
        llm_states=np.zeros((L_LLM, 16), np.float32),
        llm_mask=(np.arange(L_LLM) < 1).astype(np.int32),
        clip_states=np.zeros((L_CLIP, 12), np.float32),
    )
    return batch, null


def _trainer(mesh):
    """The loop's trainer for the tiny config (same optimizer and objective)."""
    optim = dataclass_from(OptimConfig, TINY.optim)
    objective = dataclass_from(ObjectiveConfig, TINY.objective)
    return Trainer(lambda rngs: StepVideoDiT(DIT, rngs=rngs), optim, objective, mesh, DIT_SHARDING)


def _steps(trainer, n, batch, null, fixed_noise=False):
    state = trainer.init_state(0)
    b, nl = trainer.device_batch(batch), trainer.device_replicated(null)
    losses = []
    for _ in range(n):
        state, m = trainer.step(state, b, nl, fixed_noise=fixed_noise)
        losses.append(float(m["loss"]))
    return state, losses


def _single_device_mesh():
    return make_mesh(MeshConfig(fsdp=1), jax.devices()[:1])


def test_fixed_batch_loss_drops_10x():
    """Same batch, t, noise and caption dropout at every step: the loss must drop 10x in 200 steps."""
    batch, null = _fixed_batch()
    _, losses = _steps(_trainer(_single_device_mesh()), 200, batch, null, fixed_noise=True)
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_sharded_step_equals_single_device():
    batch, null = _fixed_batch()
    assert len(jax.devices()) == 8
    single = _trainer(_single_device_mesh())
    sharded = _trainer(make_mesh(MeshConfig.parse(TINY.mesh)))  # FSDP over the 8 simulated devices
    kernel = sharded.param_shardings["blocks"]["ff"]["w_in"]["kernel"]
    assert kernel.spec == jax.sharding.PartitionSpec(None, "fsdp", None)
    s1, l1 = _steps(single, 3, batch, null)
    s8, l8 = _steps(sharded, 3, batch, null)
    assert s8["params"]["blocks"]["ff"]["w_in"]["kernel"].sharding.spec == kernel.spec
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s8["params"]), jax.tree.leaves(s1["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_given_params_on_one_device_start_a_state_sharded_over_the_mesh():
    """A converted checkpoint restored without a mesh sits on device 0; the 8-device run starts from it
    (the mesh's jit refused such arguments before init_state placed them)."""
    sharded = _trainer(make_mesh(MeshConfig.parse(TINY.mesh)))
    params = _trainer(_single_device_mesh()).params_of(StepVideoDiT(DIT, rngs=nnx.Rngs(5)))
    assert {d for leaf in jax.tree.leaves(params) for d in leaf.devices()} == {jax.devices()[0]}
    state = sharded.init_state(0, params)
    kernel = state["params"]["blocks"]["ff"]["w_in"]["kernel"]
    assert kernel.sharding.spec == sharded.param_shardings["blocks"]["ff"]["w_in"]["kernel"].spec
    assert len(kernel.devices()) == 8
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_t2v_to_ti2v_init_reproduces_t2v():
    t2v_cfg = dataclasses.replace(DIT, use_additional_conditions=False, patch_size=2, num_layers=1)
    t2v = StepVideoDiT(t2v_cfg, rngs=nnx.Rngs(1))
    ti2v = widen_t2v_to_ti2v(t2v, seed=3)
    assert ti2v.cfg.use_additional_conditions and ti2v.patch_embed.kernel[...].shape[0] == 4 * 2 * C
    r = np.random.default_rng(0)
    x = r.standard_normal((2, 2, 4, 4, C), np.float32)
    args = (
        np.array([0.3, 0.8], np.float32),
        r.standard_normal((2, L_LLM, 16), np.float32),
        np.ones((2, L_CLIP + L_LLM), np.int32),
        r.standard_normal((2, L_CLIP, 12), np.float32),
    )
    want = nnx.jit(lambda m: m.forward(x, *args))(t2v)
    got = nnx.jit(lambda m: m.forward(x, *args, np.zeros_like(x), np.array([3.0, 50.0], np.float32)))(ti2v)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_precompute_sharded_by_process_writes_one_index_equal_to_one_process(latents_dir, tmp_path):
    """Two processes' shares (run one after the other here; the barrier is theirs to wait on) give the
    one-process files: the same index (one, merged by process 0; no parts left) and the same arrays."""
    encoder = ClipEncoder(_PoolVAE(), _HashPrompts(), ObjectiveConfig())
    manifest = str(latents_dir.parent / "manifest.jsonl")
    out = tmp_path / "sharded"
    kw = dict(num_frames=17, frame_stride=1, buckets=((32, 32),), process_count=2, barrier=lambda: None)
    share = precompute(manifest, str(out), encoder, process_index=1, **kw)
    assert not (out / "index.jsonl").exists() and share["written"] == 3  # items 1, 3, 5 (6 is too short)
    counts = precompute(manifest, str(out), encoder, process_index=0, **kw)
    assert counts == {"written": 6, "skipped_too_short": 1}
    assert (out / "index.jsonl").read_text() == (latents_dir / "index.jsonl").read_text()
    assert sorted(os.listdir(out)) == ["index.jsonl", "items", "null_prompt.npz"]
    for row in map(json.loads, (out / "index.jsonl").read_text().splitlines()):
        with np.load(out / row["latents"]) as got, np.load(latents_dir / row["latents"]) as want:
            assert got.files == want.files
            for k in want.files:
                np.testing.assert_array_equal(got[k], want[k])


def test_sigterm_checkpoints_the_step_then_resume_matches_and_unreadable_latest_falls_back(
    latents_dir, tmp_path, monkeypatch, caplog, full_run
):
    import signal

    full, _ = full_run

    # SIGTERM during update 2: that update finishes, is checkpointed as step 3 (not a multiple of
    # `every`), and the run stops.
    real_step = Trainer.step

    def step_with_sigterm(self, state, *args, **kwargs):
        if int(jax.device_get(state["step"])) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, state, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", step_with_sigterm)
    part = train(_run_config(latents_dir, 6), str(tmp_path / "part"), progress=False)
    monkeypatch.setattr(Trainer, "step", real_step)
    assert (part.interrupted, part.final_step, sorted(part.losses)) == ("SIGTERM", 3, [0, 1, 2])
    assert signal.getsignal(signal.SIGTERM) is not None  # the loop's handler was put back
    ckpts = tmp_path / "part" / "checkpoints"
    assert max(int(p) for p in os.listdir(ckpts) if p.isdigit()) == 3
    resumed = train(_run_config(latents_dir, 6), str(tmp_path / "part"), progress=False)
    assert sorted(resumed.losses) == [3, 4, 5] and resumed.interrupted is None
    for step in range(6):  # bit for bit the uninterrupted run
        assert part.losses.get(step, resumed.losses.get(step)) == full.losses[step], step

    # The newest checkpoint (6) truncated: moved aside with a one-line notice, resumed from 4.
    for root, _, files in os.walk(ckpts / "6"):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getsize(path) > 64:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
    caplog.set_level("WARNING")
    again = train(_run_config(latents_dir, 6), str(tmp_path / "part"), progress=False)
    assert sorted(again.losses) == [4, 5] and all(again.losses[s] == full.losses[s] for s in (4, 5))
    notices = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(notices) == 1 and "checkpoint step 6" in notices[0] and "\n" not in notices[0], notices
    assert (tmp_path / "part" / "unreadable_checkpoints" / "6").is_dir()

    # Resuming with a changed model config names the field.
    cfg = _run_config(latents_dir, 8)
    cfg.model.num_layers = 3
    with pytest.raises(ValueError, match=r"model config changed.*num_layers: checkpoint 2, config 3"):
        train(cfg, str(tmp_path / "part"), progress=False)
