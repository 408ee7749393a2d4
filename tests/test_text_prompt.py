"""Prompt encoding as released (layout of the outputs), the in-process cache and the on-disk cache."""

import jax.numpy as jnp
import numpy as np
import pytest

from stepvideo_jax.testing import build_tiny_prompt_encoder, tiny_clip_config, tiny_step_llm_config
from stepvideo_jax.text import PromptEncoder

NEG = "low quality, blurry, distorted"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return build_tiny_prompt_encoder(tmp_path_factory.mktemp("tiny"), seed=0)


def test_layout_matches_release(encoder):
    prompts = ["a cat walks along the beach", NEG]
    llm_states, mask, clip_states = encoder.encode_prompts(prompts)
    llm_cfg, clip_cfg = tiny_step_llm_config(), tiny_clip_config()
    assert llm_states.shape == (2, 320, llm_cfg.hidden_size) and clip_states.shape == (2, 77, clip_cfg.hidden_size)
    assert mask.shape == (2, 77 + 320) and mask.dtype == jnp.int32
    step_ids, step_mask = encoder.step_tokenizer(prompts)
    clip_ids, clip_mask = encoder.clip_tokenizer(prompts)
    assert clip_mask.sum() < 2 * 77  # CLIP has padding, yet every CLIP position is 1 in the mask
    np.testing.assert_array_equal(np.asarray(mask[:, :77]), 1)
    np.testing.assert_array_equal(np.asarray(mask[:, 77:]), step_mask)
    # Same numbers as running the encoders directly on the whole batch.
    direct_llm = encoder.step_llm(jnp.asarray(step_ids), jnp.asarray(step_mask))
    direct_clip, _ = encoder.clip(jnp.asarray(clip_ids), jnp.asarray(clip_mask))
    np.testing.assert_allclose(np.asarray(llm_states), np.asarray(direct_llm), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(clip_states), np.asarray(direct_clip), rtol=1e-5, atol=1e-5)


def test_in_process_cache_is_identical_and_does_not_recompute(encoder, monkeypatch):
    first = encoder.encode_prompts(["a dog runs", NEG])
    count = encoder.num_encoded

    def no_encoding(*args, **kwargs):
        raise AssertionError("a cached prompt was encoded again")

    monkeypatch.setattr(encoder, "_encode", no_encoding)
    again = encoder.encode_prompts(["a dog runs", NEG])
    assert encoder.num_encoded == count
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    swapped = encoder.encode_prompts([NEG, NEG, "a dog runs"])  # any order, repeats, no recompute
    np.testing.assert_array_equal(np.asarray(swapped[0][2]), np.asarray(first[0][0]))
    np.testing.assert_array_equal(np.asarray(swapped[2][1]), np.asarray(first[2][1]))
    monkeypatch.undo()
    encoder.encode_prompts(["a new prompt", NEG])
    assert encoder.num_encoded == count + 1  # only the new prompt, not the cached negative


def test_disk_cache_round_trip_and_fingerprint(encoder, tmp_path):
    cached = PromptEncoder(
        encoder.step_llm, encoder.step_tokenizer, encoder.clip, encoder.clip_tokenizer, cache_dir=tmp_path
    )
    a = cached.encode_prompts(["the camera pans", NEG])
    assert cached.num_encoded == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2
    cached.clear_cache()
    b = cached.encode_prompts(["the camera pans", NEG])
    assert cached.num_encoded == 2 and cached.num_disk_hits == 2
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    other = PromptEncoder(
        encoder.step_llm,
        encoder.step_tokenizer,
        encoder.clip,
        encoder.clip_tokenizer,
        cache_dir=tmp_path,
        fingerprint="other-model",
    )
    assert other._disk_get(NEG) is None  # another model's fingerprint never reads these files
    assert len(cached.fingerprint) == 64 and cached.fingerprint != other.fingerprint


def test_bad_prompts(encoder):
    with pytest.raises(ValueError, match="non-empty list"):
        encoder.encode_prompts([])
    with pytest.raises(ValueError, match="list of str"):
        encoder.encode_prompts([None])


def test_from_converted_checkpoint(tmp_path, fixture_prefix):
    """prompt_encoder_from_checkpoint over a checkpoint converted from the fixtures' released layout:
    its Step-LLM states equal the float64 reference forward of the fixture weights on the same tokens."""
    import io

    import sentencepiece as spm
    from release_layout import build_release
    from safetensors.numpy import load_file
    from text_reference import step_llm_forward

    from stepvideo_jax.components import convert_release, prompt_encoder_from_checkpoint
    from stepvideo_jax.parity.fixtures import load_fixture

    src = tmp_path / "release"
    build_release(str(src), fixture_prefix, components=("step_llm", "hunyuan_clip"))
    model = io.BytesIO()  # a real (tiny) sentencepiece model in place of the stand-in bytes; ids < 300
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a cat walks on the beach", "a dog runs in a field"]),
        model_writer=model,
        vocab_size=30,
        hard_vocab_limit=False,
        model_type="bpe",
        num_threads=1,
        minloglevel=2,
    )
    (src / "step_llm" / "step1_chat_tokenizer.model").write_bytes(model.getvalue())
    convert_release(str(src), str(tmp_path / "out"), components=["step_llm", "hunyuan_clip"], dtype="float32")
    enc = prompt_encoder_from_checkpoint(tmp_path / "out")
    llm_states, mask, clip_states = enc.encode_prompts(["a cat walks", "hello"])
    llm_len, clip_len = enc.step_tokenizer.max_length, enc.clip_tokenizer.max_length
    assert (llm_len, clip_len) == (320, 77)
    assert llm_states.shape == (2, 320, 384) and clip_states.shape == (2, 77, 64) and mask.shape == (2, 397)
    step_ids, step_mask = enc.step_tokenizer(["a cat walks", "hello"])
    np.testing.assert_array_equal(np.asarray(mask[:, 77:]), step_mask)
    assert step_ids.max() < 300 and step_mask[0].sum() > 3
    fx = load_fixture(fixture_prefix("step_llm"))
    expected = step_llm_forward(load_file(fx.weights_path), fx.config, step_ids)
    rel = np.linalg.norm(np.asarray(llm_states, np.float64) - expected) / np.linalg.norm(expected)
    assert rel <= 1e-5, rel


def test_missing_prompts_are_encoded_in_fixed_size_groups(encoder, monkeypatch):
    """Every encoder call has `encode_batch` rows (one program), padded rows are dropped, and a prompt's
    numbers do not depend on what else is in its group."""
    shapes = []
    real = encoder._encode

    def spy(llm_state, clip_state, llm_ids, *rest):
        shapes.append(llm_ids.shape[0])
        return real(llm_state, clip_state, llm_ids, *rest)

    monkeypatch.setattr(encoder, "_encode", spy)
    encoder.clear_cache()
    together = encoder.encode_prompts(["one red dot", "two blue dots", "three dots", "four"])
    encoder.clear_cache()
    alone = encoder.encode_prompts(["three dots"])  # padded with itself; above it shared a group with "four"
    assert shapes == [2, 2, 2]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(np.asarray(a[2]), np.asarray(b[0]))
    with pytest.raises(ValueError, match="encode_batch must be >= 1"):
        PromptEncoder(encoder.step_llm, encoder.step_tokenizer, encoder.clip, encoder.clip_tokenizer, encode_batch=0)
