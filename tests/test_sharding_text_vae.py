"""Sharded Step-LLM forward and spread VAE decode equal to the single-device ones (8 simulated CPU
devices, float32) on the same meshes as the DiT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax.sharding import MeshConfig, create_sharded_model, make_mesh, model_shardings, use_mesh_rules
from stepvideo_jax.text import TEXT_SHARDING, StepLLM, StepLLMConfig
from stepvideo_jax.vae import VAE_SHARDING, VAEConfig, VideoVAE, sharded_vae_decode

MESHES = {
    "fsdp8": MeshConfig(fsdp=8),
    "fsdp2_tensor4": MeshConfig(fsdp=2, tensor=4),
    "data2_seq4": MeshConfig(data=2, fsdp=1, sequence=4),
    "fsdp2_seq2_tensor2": MeshConfig(fsdp=2, sequence=2, tensor=2),
}


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------------------- Step-LLM
LLM_CFG = StepLLMConfig(hidden_size=64, num_heads=8, num_groups=4, ffn_hidden_size=128, num_layers=2, vocab_size=256)


@pytest.fixture(scope="module")
def llm_reference():
    model = StepLLM(LLM_CFG, rngs=nnx.Rngs(0))
    ids = jax.random.randint(jax.random.key(1), (2, 16), 3, LLM_CFG.vocab_size)
    mask = jnp.ones_like(ids)
    out = nnx.jit(lambda m, i, a: m(i, a))(model, ids, mask)
    return nnx.state(model), ids, mask, np.asarray(out)


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_sharded_step_llm_equals_single_device(llm_reference, mesh_name):
    state, ids, mask, expected = llm_reference
    mesh = make_mesh(MESHES[mesh_name])
    model = create_sharded_model(lambda: StepLLM(LLM_CFG, rngs=nnx.Rngs(0)), mesh, TEXT_SHARDING)
    nnx.update(model, jax.device_put(state, model_shardings(model, mesh, TEXT_SHARDING)))
    with use_mesh_rules(mesh, TEXT_SHARDING):
        out = nnx.jit(lambda m, i, a: m(i, a))(model, ids, mask)
    assert rel_l2(out, expected) <= 1e-5


# -------------------------------------------------------------------------------------------- VAE
VAE_CFG = VAEConfig(
    z_channels=2, encoder_ch=8, encoder_ch_mult=(1, 1, 2), encoder_temporal_down_layers=(0, 1), norm_groups=4,
    decoder_ch=8, decoder_ch_mult=(1, 2, 2), decoder_temporal_up_layers=(1, 2),
)  # fmt: skip


@pytest.fixture(scope="module")
def vae_reference():
    vae = VideoVAE(VAE_CFG, rngs=nnx.Rngs(0))
    latents = jax.random.normal(jax.random.key(2), (2, 2 * VAE_CFG.latent_len, 4, 4, VAE_CFG.z_channels))
    return vae, latents, np.asarray(vae.decode_channels_last(latents))


@pytest.mark.parametrize("mesh_name", ["fsdp8", "data2_seq4"])
def test_vae_decode_spreads_chunks_and_equals_single_device(vae_reference, mesh_name):
    vae, latents, expected = vae_reference
    mesh = make_mesh(MESHES[mesh_name])
    out = sharded_vae_decode(vae, latents, mesh)
    assert out.shape == expected.shape
    assert rel_l2(out, expected) <= 1e-5
    # Parameters replicated; the chunk batch is spread over all 8 devices.
    assert all(s.is_fully_replicated for s in jax.tree.leaves(model_shardings(vae, mesh, VAE_SHARDING)))
