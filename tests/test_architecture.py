"""The architecture's invariants: layering, the component registry, networks entering their own sharding
rules, unknown logical axes failing loudly, packaged configs resolving from anywhere."""

import ast
import os
import pathlib

import jax
import numpy as np
import pytest
from flax import nnx

from stepvideo_jax import components, configs
from stepvideo_jax.dit import DIT_SHARDING, StepVideoDiT
from stepvideo_jax.sharding import (
    MeshConfig,
    UnknownLogicalAxisError,
    constrain,
    enters_rules,
    logical_to_spec,
    make_mesh,
    model_shardings,
    use_mesh,
)
from stepvideo_jax.text import TEXT_SHARDING, HunyuanCLIP, StepLLM
from stepvideo_jax.vae import VAE_SHARDING, VideoVAE

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "stepvideo_jax"

# Lowest layer first; a module may import its own layer or lower ones only.
LAYERS = [
    ("config", "layers", "attention", "sharding", "files", "distributed"),
    ("dit", "vae", "text"),
    ("convert", "checkpoint", "components", "testing", "lora", "quantize"),
    ("diffusion", "training", "data", "motion", "video_io", "evaluation"),
    ("tools", "parity", "configs", "app", "api"),
]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "stepvideo_jax" or len(parts) < 2:
        return None
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    raise AssertionError(f"module {module} is in no layer of tests/test_architecture.py; add it to LAYERS")


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):  # function-local imports count too
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "stepvideo_jax." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = _layer(module.removesuffix(".__init__"))
        if own is None:
            continue
        for imported, line in _imports(path):
            try:
                theirs = _layer(imported)
            except AssertionError:
                continue  # `from stepvideo_jax import x` names resolve through their own module entries
            if theirs is not None and theirs > own:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {imported} (layer {theirs} > {own})")
    assert not bad, "\n".join(bad)


def test_registry_holds_objects_for_every_component():
    assert list(components.COMPONENTS) == ["transformer", "vae", "step_llm", "hunyuan_clip"]
    expected = {
        "transformer": (StepVideoDiT, DIT_SHARDING),
        "vae": (VideoVAE, VAE_SHARDING),
        "step_llm": (StepLLM, TEXT_SHARDING),
        "hunyuan_clip": (HunyuanCLIP, TEXT_SHARDING),
    }
    for name, comp in components.COMPONENTS.items():
        model_class, rules = expected[name]
        assert comp.model_class is model_class and comp.sharding is rules is model_class.SHARDING
        assert callable(comp.convert) and len(comp.key_table) > 0
        assert hasattr(comp.config_class, "from_release") and hasattr(comp.config_class, "to_release")
    with pytest.raises(ValueError, match="unknown component 'unet'"):
        components.component("unet")


def test_unknown_logical_axis_raises_naming_the_name_and_the_table():
    mesh = make_mesh(MeshConfig(fsdp=-1))
    with pytest.raises(UnknownLogicalAxisError, match=r"'sequence'.*'dit.activations'"):
        logical_to_spec(("batch", "sequence", "embed"), DIT_SHARDING, shape=(2, 64, 32), mesh=mesh)
    with pytest.raises(UnknownLogicalAxisError, match=r"'vocab'.*'dit.params'"):
        logical_to_spec(("vocab", "embed"), DIT_SHARDING.params, shape=(8, 32), mesh=mesh)

    @enters_rules(DIT_SHARDING)
    def network(x):
        return constrain(x, ("batch", "sequence", "embed"))

    with use_mesh(mesh), pytest.raises(UnknownLogicalAxisError, match="sequence"):
        jax.jit(network)(np.zeros((2, 64, 32), np.float32))
    # Code outside every network under a mesh has no table to read: that is an error too.
    with use_mesh(mesh), pytest.raises(UnknownLogicalAxisError, match="no network's sharding rules"):
        constrain(np.zeros((2, 4), np.float32), ("batch", "embed"))
    # Without a mesh nothing is constrained (single-device runs).
    assert network(np.ones((1, 2, 3), np.float32)).shape == (1, 2, 3)


def test_dit_restores_into_its_shardings_and_runs_without_the_caller_entering_rules(tmp_path):
    from stepvideo_jax.testing import random_model, tiny_dit_config

    cfg = tiny_dit_config()
    model = random_model(lambda: StepVideoDiT(cfg, rngs=nnx.Rngs(0)), seed=0)
    components.save_components(tmp_path / "ckpt", {"transformer": (model, None)}, source="test")
    mesh = make_mesh(MeshConfig(fsdp=-1))
    restored = components.restore_component(tmp_path / "ckpt", "transformer", mesh=mesh)
    want = model_shardings(nnx.state(restored, nnx.Param), mesh, DIT_SHARDING)
    for (path, var), (_, sharding) in zip(nnx.to_flat_state(nnx.state(restored, nnx.Param)), nnx.to_flat_state(want)):
        assert var[...].sharding == sharding, path
    assert any(not v[...].sharding.is_fully_replicated for _, v in nnx.to_flat_state(nnx.state(restored, nnx.Param)))

    rng = np.random.default_rng(0)
    inputs = dict(
        hidden_states=rng.normal(size=(2, 3, 8, 4, 4)).astype(np.float32),
        timestep=np.array([0.3, 0.7], np.float32),
        encoder_hidden_states=rng.normal(size=(2, 5, 16)).astype(np.float32),
        encoder_attention_mask=np.concatenate(
            [np.ones((2, 77), np.int32), np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)], axis=1
        ),
        encoder_hidden_states_2=rng.normal(size=(2, 77, 12)).astype(np.float32),
        condition_hidden_states=rng.normal(size=(2, 3, 8, 4, 4)).astype(np.float32),
        motion_score=5.0,
    )
    expected = np.asarray(model(**inputs))
    with use_mesh(mesh):  # the caller names the mesh only; the DiT enters DIT_SHARDING itself
        out = np.asarray(restored(**inputs))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "value", ["ti2v:tiny", "configs/ti2v.py:tiny", "stepvideo_jax/configs/ti2v.py:tiny", "ti2v.py:tiny"]
)
def test_packaged_configs_resolve_from_any_spelling(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root
    resolved = configs.resolve_config_arg(value)
    assert resolved == os.path.join(os.path.dirname(configs.__file__), "ti2v.py") + ":tiny"
    assert configs.get_config(value).variant == "tiny"


def test_a_config_file_path_wins_and_unknown_names_fail(tmp_path, monkeypatch):
    own = tmp_path / "mine.py"
    own.write_text("def get_config(arg=None):\n    return {'a': 1}\n")
    assert configs.resolve_config_arg(f"{own}:x") == f"{own}:x"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="neither a file nor a packaged config.*ti2v, t2v, demo"):
        configs.resolve_config_arg("ti3v:tiny")


def test_shared_training_sections_reject_unknown_fields():
    from stepvideo_jax.configs import common

    assert configs.get_config("train_ti2v:tiny").network == "dit"
    assert configs.get_config("demo:vae").network == "vae"
    assert configs.get_config("ti2v").pipeline == "ti2v" and configs.get_config("t2v").pipeline == "t2v"
    with pytest.raises(ValueError, match="unknown config fields.*learning_rte"):
        common.optim(learning_rte=1.0)
