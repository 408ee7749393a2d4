"""Builds a released-layout checkpoint folder from the reference fixtures' weights (for tests)."""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import load_file, save_file

# component -> (fixture, weights location in the release, shards (0 = one plain file))
LAYOUT = {
    "transformer": ("dit_ti2v", "transformer", 3),
    "vae": ("vae_v2", "vae/vae_v2.safetensors", 0),
    "step_llm": ("step_llm", "step_llm", 2),
    "hunyuan_clip": ("hunyuan_clip", "hunyuan_clip/clip_text_encoder/model.safetensors", 0),
}
SHARD_STEM = {"transformer": "diffusion_pytorch_model", "step_llm": "model"}
TOKENIZER_FILES = {
    "step_llm/step1_chat_tokenizer.model": b"sentencepiece model bytes (stand-in)\x00\x01",
    "hunyuan_clip/tokenizer/vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n",
    "hunyuan_clip/tokenizer/tokenizer_config.json": b'{"do_lower_case": true}',
}


def write_shards(folder: str, stem: str, tensors: dict[str, np.ndarray], shards: int) -> dict[str, str]:
    """Writes `tensors` as `shards` safetensors files + `{stem}.safetensors.index.json`; returns the map."""
    os.makedirs(folder, exist_ok=True)
    keys = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: tensors[k] for k in part}, os.path.join(folder, name))
        weight_map.update({k: name for k in part})
    with open(os.path.join(folder, f"{stem}.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return weight_map


def build_release(root: str, fixture_prefix, components=tuple(LAYOUT)) -> dict[str, str]:
    """Writes the released folder layout for `components` under `root` from the fixtures; returns
    {component: fixture prefix}. The VAE also gets `vae/config.json` (the fixture's tiny config; the
    release has none and the converter then uses the real model's)."""
    prefixes = {}
    for name in components:
        fixture, where, shards = LAYOUT[name]
        prefix = fixture_prefix(fixture)
        prefixes[name] = prefix
        with open(prefix + ".json") as f:
            config = json.load(f)["config"]
        tensors = load_file(prefix + ".weights.safetensors")
        path = os.path.join(root, where)
        if shards:
            write_shards(path, SHARD_STEM[name], tensors, shards)
            config_dir = path
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_file(tensors, path)
            config_dir = os.path.dirname(path)
        with open(os.path.join(config_dir, "config.json"), "w") as f:
            json.dump(config, f)
    for rel, data in TOKENIZER_FILES.items():
        if rel.split("/")[0] in components:
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "wb") as f:
                f.write(data)
    return prefixes
