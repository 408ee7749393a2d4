"""The LoRA recipe's prior stage: replay targets replaced by the shipped model's own samples, star rows kept."""

import json
import os

import numpy as np
import pytest

from stepvideo_jax.configs import get_config
from stepvideo_jax.tools import lora_recipe


def _fake_latents(workdir, captions):
    """A latents folder as precompute writes it: one npz per clip + index.jsonl naming the raw clip."""
    rng = np.random.default_rng(0)
    items, clips = os.path.join(workdir, "latents", "items"), os.path.join(workdir, "data", "clips")
    os.makedirs(items)
    os.makedirs(clips)
    rows = []
    for i, caption in enumerate(captions):
        clip = rng.integers(20, 220, size=(17, 64, 64, 3), dtype=np.uint8)
        np.save(os.path.join(clips, f"{i:06d}.npy"), clip)
        np.savez(
            os.path.join(items, f"{i:06d}.npz"),
            latents=rng.normal(size=(3, 8, 8, 8)).astype(np.float32),
            condition=rng.normal(size=(1, 8, 8, 8)).astype(np.float32),
            motion_score=np.float32(4.0 + i),
            llm_states=rng.normal(size=(24, 64)).astype(np.float32),
            llm_mask=np.ones(24, np.int32),
            clip_states=rng.normal(size=(32, 32)).astype(np.float32),
        )
        rows.append(
            {
                "latents": f"items/{i:06d}.npz",
                "caption": caption,
                "motion_score": 4.0 + i,
                "video": os.path.join(clips, f"{i:06d}.npy"),
            }
        )
    np.savez(os.path.join(workdir, "latents", "null_prompt.npz"), llm_states=np.zeros((24, 64), np.float32))
    with open(os.path.join(workdir, "latents", "index.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.mark.slow  # ~80 s: two demo videos sampled, one through the stage and one through the API
def test_prior_stage_replaces_replay_targets_with_the_base_models_samples(tmp_path):
    from stepvideo_jax.api import TI2VPipeline
    from stepvideo_jax.data.manifest import iter_path_index

    workdir = str(tmp_path)
    captions = ["a large red star moves left", "a small blue square moves up"]
    _fake_latents(workdir, captions)
    recipe = get_config("demo:lora_recipe")
    assert recipe.replay_targets == "base" and recipe.prior_cfg == 1.0
    recipe.replay_targets = "clips"
    assert lora_recipe._stage_prior(recipe, workdir) == {"replay_targets": "clips"}  # nothing written
    assert not os.path.exists(os.path.join(workdir, "prior"))
    recipe.replay_targets = "base"
    summary = lora_recipe._stage_prior(recipe, workdir)
    assert summary == {"replay_targets": "base", "replaced": 1, "kept": 1}
    rows = [r for _, r in iter_path_index(os.path.join(workdir, "prior", "index.jsonl"), "latents", "row")]
    assert [r["caption"] for r in rows] == captions
    # The star clip trains on its own latents, unchanged.
    assert os.path.samefile(rows[0]["latents"], os.path.join(workdir, "latents", "items", "000000.npz"))
    # The replay clip: the base model's sample of (first frame, caption, motion score), the rest as precomputed.
    with np.load(rows[1]["latents"]) as got, np.load(os.path.join(workdir, "latents", "items", "000001.npz")) as old:
        for key in ("condition", "motion_score", "llm_states", "llm_mask", "clip_states"):
            np.testing.assert_array_equal(got[key], old[key], err_msg=key)
        pipe = TI2VPipeline.from_checkpoint(get_config("demo:lora").init.checkpoint, progress=False)
        clip = np.load(os.path.join(workdir, "data", "clips", "000001.npy"))
        expected = pipe(clip[0], captions[1], motion_score=5.0, cfg=1.0, seed=recipe.precompute_seed * 1_000_003 + 1)
        np.testing.assert_array_equal(got["latents"], expected.latents[0])
        assert not np.allclose(got["latents"], old["latents"])
    # The lora stage trains on the prior index, the dropped-caption text states beside it.
    with np.load(os.path.join(workdir, "prior", "null_prompt.npz")) as null:
        assert list(null) == ["llm_states"]
    assert lora_recipe._lora_train_config(recipe, workdir).data.manifest == os.path.join(
        workdir, "prior", "index.jsonl"
    )
    recipe.replay_targets = "teacher"
    with pytest.raises(ValueError, match="replay_targets must be one of clips, base; got 'teacher'"):
        lora_recipe._stage_prior(recipe, workdir)
