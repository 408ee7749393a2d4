"""The demo data's background sets (v1 = the shipped model's, v2 = light / mid-grey / coloured too), the
prompt-vocabulary warning, and the recipe running both VAE cycles in one command."""

import dataclasses
import json
import logging
import os
import re

import numpy as np
import pytest

from stepvideo_jax.configs import get_config
from stepvideo_jax.data import synthetic
from stepvideo_jax.diffusion import pipeline
from stepvideo_jax.text import ClipTokenizer
from stepvideo_jax.text.tokenizers import words_outside
from stepvideo_jax.tools import demo_recipe

DEMO_CLIP_TOKENIZER = os.path.join(os.path.dirname(pipeline.__file__), "..", "demo", "checkpoint", "hunyuan_clip")


def _grey(rgb):
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def test_v1_is_the_default_and_v2_draws_every_background_group():
    combo = ("large", "blue", "triangle", "right")
    kw = dict(frames=17, height=64, width=64, max_speed=0.6)
    a = synthetic.sample_spec(np.random.default_rng(5), combo, **kw)
    assert a == synthetic.sample_spec(np.random.default_rng(5), combo, backgrounds="v1", **kw)
    rng = np.random.default_rng(0)
    firsts = {synthetic.sample_spec(rng, combo, backgrounds="v2", **kw).bg_colors[0] for _ in range(200)}
    palettes = {g: {tuple(int(v) for v in c) for c in p} for g, p in synthetic.BACKGROUND_GROUPS.items()}
    assert firsts <= set().union(*palettes.values())
    assert all(firsts & p for p in palettes.values())  # dark, light, mid-grey and coloured all drawn
    assert max(_grey(c) for c in firsts) > 200 and (128, 128, 128) in firsts
    light = synthetic.sample_spec(rng, combo, backgrounds="v2", bg_group="light", **kw)
    assert all(0 <= v <= 255 for c in light.bg_colors for v in c) and light.bg_colors[1][0] < light.bg_colors[0][0]
    with pytest.raises(ValueError, match="backgrounds must be one of"):
        synthetic.sample_spec(rng, combo, backgrounds="v3", **kw)
    with pytest.raises(ValueError, match="bg_group needs backgrounds='v2'"):
        synthetic.sample_spec(rng, combo, bg_group="light", **kw)


def test_low_contrast_clips_take_their_motion_score_from_a_dark_proxy():
    kw = dict(frames=17, height=64, width=64, max_speed=0.6)
    spec = synthetic.sample_spec(np.random.default_rng(1), ("large", "blue", "circle", "left"), **kw)
    spec = dataclasses.replace(spec, speed=0.5, background="plain", bg_colors=((128, 128, 128),) * 2)
    proxy = synthetic.motion_proxy(spec)
    assert proxy is not None and proxy.background == "plain" and proxy.speed == spec.speed
    on_grey = synthetic.clip_motion_score(synthetic.render_clip(spec, 17, 64, 64))
    on_proxy = synthetic.clip_motion_score(synthetic.render_clip(proxy, 17, 64, 64))
    assert on_proxy > 2 * on_grey  # the flow barely sees blue on mid-grey
    dark = dataclasses.replace(spec, bg_colors=((30, 30, 38), (52, 52, 60)))
    assert synthetic.motion_proxy(dark) is None


def test_v2_dataset_heldout_groups_and_mid_grey_check(tmp_path):
    summary = synthetic.write_dataset(str(tmp_path / "full"), num_train=4, num_heldout=8, seed=0, backgrounds="v2")
    assert summary["backgrounds"] == "v2" and summary["train"] == 4
    held = [json.loads(line) for line in open(tmp_path / "full" / "heldout" / "heldout.jsonl")]
    groups = [h["bg_group"] for h in held]
    assert {"light", "mid_grey"} <= set(groups) and len(held) == 8
    check = tmp_path / "full" / "checks" / synthetic.MID_GREY_CHECK[0]
    assert (check / "000.txt").read_text().strip() == "a large blue triangle moves right"
    import cv2

    image = cv2.imread(str(check / "000.png"))[:, :, ::-1]
    assert (image == 128).all(axis=-1).mean() > 0.8  # a plain (128, 128, 128) background
    assert (np.abs(image.astype(int) - (70, 120, 255)).sum(-1) < 30).any()  # and the blue shape
    # The held-out-only writer replays the same draws (v2 included).
    synthetic.write_heldout(str(tmp_path / "only"), num_train=4, num_heldout=8, seed=0, backgrounds="v2")
    for sub in ("heldout/heldout.jsonl", f"checks/{synthetic.MID_GREY_CHECK[0]}/000.png"):
        assert (tmp_path / "full" / sub).read_bytes() == (tmp_path / "only" / sub).read_bytes(), sub


def test_words_outside_the_demo_vocabulary_are_named_once(caplog):
    words = ClipTokenizer(DEMO_CLIP_TOKENIZER).whole_words()
    assert {"red", "circle", "moves", "left"} <= words and "##e" not in words and "[UNK]" not in words
    assert words_outside("A big red circle moves LEFT on a big grey field.", words) == ["big", "on", "grey", "field"]
    assert words_outside("a small white square moves up", words) == []

    class _Encoder:
        clip_tokenizer = ClipTokenizer(DEMO_CLIP_TOKENIZER)

    with caplog.at_level(logging.WARNING):
        pipeline._warn_outside_vocabulary("a cat jumps", _Encoder())
        pipeline._warn_outside_vocabulary("a red circle moves up", _Encoder())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and lines[0].endswith(": cat, jumps") and "\n" not in lines[0]
    assert get_config("demo").vocabulary_warning and not get_config("ti2v:tiny").vocabulary_warning


def test_recipe_runs_every_vae_cycle_in_one_stage(tmp_path, monkeypatch):
    from stepvideo_jax.training import loop

    calls = []

    def fake_train(config, run_dir):
        calls.append((config.train.steps, config.optim.total_steps, run_dir))
        return loop.TrainResult(losses={config.train.steps: 1.0}, final_step=config.train.steps, data_summary="")

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(loop, "load_trained_model", lambda config, run_dir: "vae")
    monkeypatch.setattr(demo_recipe, "_components_with", lambda workdir, extra: None)
    recipe = get_config("demo:recipe")
    assert recipe.data.backgrounds == "v1"  # the shipped model's data stays the default
    summary = demo_recipe._stage_vae(recipe, str(tmp_path))
    run_dir = str(tmp_path / "vae")
    assert calls == [(450, 450, run_dir), (900, 900, run_dir)] and summary["steps"] == 900


def test_recipe_continues_from_a_checkpoint(tmp_path, monkeypatch):
    """`recipe.init_checkpoint`: the text encoders are the checkpoint's (tokenizers included), the VAE's
    first cycle and the DiT start from its weights."""
    from stepvideo_jax.components import tokenizer_dir
    from stepvideo_jax.training import loop

    recipe = get_config("demo:recipe")
    recipe.init_checkpoint = os.path.join(os.path.dirname(DEMO_CLIP_TOKENIZER))
    summary = demo_recipe._stage_text(recipe, str(tmp_path))
    assert summary["copied_from"] == recipe.init_checkpoint
    for name in ("step_llm", "hunyuan_clip"):
        ours, theirs = tokenizer_dir(str(tmp_path / "components"), name), tokenizer_dir(recipe.init_checkpoint, name)
        assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
        for f in os.listdir(theirs):
            assert open(os.path.join(ours, f), "rb").read() == open(os.path.join(theirs, f), "rb").read(), f
    inits = []

    def fake_train(config, run_dir):
        inits.append((config.network, config.init.kind, config.init.checkpoint))
        return loop.TrainResult(losses={1: 1.0}, final_step=1, data_summary="")

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(loop, "load_trained_model", lambda config, run_dir: "vae")
    monkeypatch.setattr(demo_recipe, "_components_with", lambda workdir, extra: None)
    recipe.vae_cycles = ((3, 3),)
    demo_recipe._stage_vae(recipe, str(tmp_path))
    demo_recipe._stage_dit(recipe, str(tmp_path))
    assert inits == [("vae", "converted", recipe.init_checkpoint), ("dit", "converted", recipe.init_checkpoint)]
    # init_components="vae": the DiT trains from nothing (the dit config's own init) on the continued VAE
    recipe.init_components = "vae"
    del inits[:]
    demo_recipe._stage_vae(recipe, str(tmp_path))
    demo_recipe._stage_dit(recipe, str(tmp_path))
    dit_default = get_config("demo:dit").init
    assert inits == [("vae", "converted", recipe.init_checkpoint), ("dit", dit_default.kind, dit_default.checkpoint)]
    recipe.init_components = "vae,text"
    with pytest.raises(ValueError, match="init_components.*text"):
        demo_recipe._stage_dit(recipe, str(tmp_path))
    recipe.init_components = "vae,dit"
    recipe.init_checkpoint = str(tmp_path / "absent")
    with pytest.raises(ValueError, match="absent"):
        demo_recipe._stage_dit(recipe, str(tmp_path))


def test_concept_dataset_on_v2_backgrounds(tmp_path):
    """The LoRA data for a v2 base: star and replay clips on the v2 backgrounds, held-out items spread
    over the groups; the v1 default is unchanged (tests/test_synthetic_concept.py pins it)."""
    out = tmp_path / "concept"
    synthetic.write_concept_dataset(
        str(out), num_concept=12, num_replay=12, num_heldout=8, frames=13, height=32, width=32, backgrounds="v2"
    )
    held = [json.loads(line) for line in open(out / "heldout" / "heldout.jsonl")]
    assert {"light", "mid_grey"} <= {h["bg_group"] for h in held}
    clips = [np.load(out / e["video"]) for e in map(json.loads, open(out / "manifest.jsonl"))]
    corner_grey = [_grey(c[0, 0, 0].astype(float)) for c in clips]
    assert max(corner_grey) > 150  # some light backgrounds among the 24 clips (v1's are all dark)
    with pytest.raises(ValueError, match="backgrounds must be one of"):
        synthetic.write_concept_dataset(str(tmp_path / "x"), num_concept=1, num_replay=0, backgrounds="v3")


def test_recipes_check_their_settings_before_the_first_stage(tmp_path):
    """A bad `init_components` / `replay_targets` fails in one line before the data stage writes anything."""
    from stepvideo_jax.tools import lora_recipe

    recipe = get_config("demo:recipe")
    recipe.init_components = "vae,text"
    with pytest.raises(ValueError, match="init_components: unknown \\['text'\\]"):
        demo_recipe.run_recipe(str(tmp_path / "demo"), ["data"], recipe)
    recipe = get_config("demo:recipe")  # latent_std 0: the stage that only sets the latent scale has nothing to do
    with pytest.raises(ValueError, match="stage latent_scale needs recipe.latent_std > 0; got 0.0"):
        demo_recipe.run_recipe(str(tmp_path / "demo"), ["data", "latent_scale"], recipe)
    with pytest.raises(ValueError, match="stage decoder needs recipe.decoder_cycles"):
        demo_recipe.run_recipe(str(tmp_path / "demo"), ["data", "decoder"], recipe)
    recipe.decoder_cycles = ((1, 1),)
    for run in ("dit", "../x", ""):  # another stage's folder, or not a folder inside WORKDIR
        recipe.decoder_run = run
        with pytest.raises(ValueError, match=f"recipe.decoder_run must be a new folder name .*; got '{re.escape(run)}'"):
            demo_recipe.run_recipe(str(tmp_path / "demo"), ["data", "decoder"], recipe)
    recipe.decoder_run, recipe.decoder_batch_size = "decoder2", -1
    with pytest.raises(ValueError, match="recipe.decoder_batch_size must be >= 0 .*; got -1"):
        demo_recipe.run_recipe(str(tmp_path / "demo"), ["data", "decoder"], recipe)
    lora = get_config("demo:lora_recipe")
    lora.replay_targets = "teacher"
    with pytest.raises(ValueError, match="replay_targets must be one of clips, base; got 'teacher'"):
        lora_recipe.run_lora_recipe(str(tmp_path / "lora"), ["data"], lora)
    assert os.listdir(tmp_path) == []


def test_recipe_sets_the_vae_latent_scale_to_the_requested_std(tmp_path):
    """`recipe.latent_std` > 0: after the VAE stage the components' VAE hands out latents of that std on
    the training clips (its weights unchanged); 0 leaves the VAE as trained."""
    import shutil

    from stepvideo_jax.components import restore_component

    shipped = os.path.dirname(DEMO_CLIP_TOKENIZER)
    shutil.copytree(shipped, tmp_path / "components")
    synthetic.write_dataset(str(tmp_path / "data"), num_train=3, num_heldout=1, seed=0, backgrounds="v2")
    recipe = get_config("demo:recipe")
    assert recipe.latent_std == 0.0 and demo_recipe._set_latent_scale(recipe, str(tmp_path)) == {}
    recipe.latent_std, recipe.latent_std_clips = 0.5, 2
    summary = demo_recipe.run_recipe(str(tmp_path), ["latent_scale"], recipe)["latent_scale"]
    vae = restore_component(str(tmp_path / "components"), "vae")
    assert vae.cfg.latent_scale == summary["latent_scale"] == pytest.approx(0.5 / summary["vae_latent_std"], 1e-3)
    entries = [json.loads(line) for line in open(tmp_path / "data" / "manifest.jsonl")][:2]
    clips = np.stack([np.load(tmp_path / "data" / e["video"]) for e in entries]).astype(np.float32) / 127.5 - 1
    assert float(np.std(np.asarray(vae.encode_channels_last(clips)))) == pytest.approx(0.5, rel=2e-3)
    original = restore_component(shipped, "vae")
    for a, b in zip(demo_recipe._leaves(vae), demo_recipe._leaves(original)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # two VAE training steps: ~40 s of compiling on 2 cores
def test_recipe_decoder_stage_trains_the_decoder_alone(tmp_path):
    """The extra stage `decoder`: the components' VAE comes back with its encoder (and so its latents
    and latent scale) exactly as it was and a changed decoder."""
    import shutil

    import jax
    from flax import nnx

    from stepvideo_jax.components import restore_component

    shutil.copytree(os.path.dirname(DEMO_CLIP_TOKENIZER), tmp_path / "components")
    synthetic.write_dataset(str(tmp_path / "data"), num_train=3, num_heldout=1, seed=0, backgrounds="v2")
    before = restore_component(str(tmp_path / "components"), "vae")
    before.cfg = dataclasses.replace(before.cfg, latent_scale=0.5)
    demo_recipe._components_with(str(tmp_path), {"vae": (before, None)})
    recipe = get_config("demo:recipe")
    recipe.decoder_cycles = ((1, 1), (2, 2))  # the second cycle resumes the first
    recipe.decoder_run, recipe.decoder_batch_size = "decoder_b2", 2
    summary = demo_recipe.run_recipe(str(tmp_path), ["decoder"], recipe)["decoder"]
    assert summary["steps"] == 2
    after = restore_component(str(tmp_path / "components"), "vae")
    assert after.cfg.latent_scale == 0.5

    def leaves(module):  # float32 (the components may be stored in another dtype than trained)
        return [np.asarray(x, np.float32) for x in jax.tree.leaves(nnx.state(module, nnx.Param))]

    for a, b in zip(leaves(after.encoder), leaves(before.encoder), strict=True):
        np.testing.assert_array_equal(a, b)
    changed = [not np.array_equal(a, b) for a, b in zip(leaves(after.decoder), leaves(before.decoder), strict=True)]
    assert sum(changed) > len(changed) // 2
    # Loading the run needs only its weights: the plain VAE config (no frozen prefixes, so another optax
    # chain than the run's) reads the same network (what `tools.export --config=demo:vae` does).
    from stepvideo_jax.training.loop import load_trained_model

    plain = get_config("demo:vae")
    plain.model.latent_scale = 0.5
    for a, b in zip(leaves(load_trained_model(plain, str(tmp_path / "decoder_b2"))), leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)
