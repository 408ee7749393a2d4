"""`benchmarks/device.py --smoke`: the GPU benchmark's code paths at tiny sizes on the CPU (its tables,
FLOP counts and the attention kernels' agreement); the release-size run needs a GPU."""

import contextlib
import io
import json
import re

import pytest

from benchmarks import device


def _table(md: str, title_start: str) -> list[list[str]]:
    """The body rows of the first Markdown table after the heading that starts with `title_start`."""
    section = md.split(f"### {title_start}", 1)[1].split("\n### ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    path = tmp_path_factory.mktemp("device") / "results.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = device.main(["--smoke", "--in_process", f"--json={path}"])
    with open(path) as f:
        return rc, buf.getvalue(), json.load(f)


def test_smoke_prints_every_table_labelled_as_smoke(smoke):
    rc, md, _ = smoke
    assert rc == 0
    assert "CPU smoke sizes (code paths only; not performance figures)" in md
    for title in ("(a) Self-attention", "(b) One DiT layer", "(c) Whole DiT forward", "(d) VAE decode", "(e) The same"):
        assert f"### {title}" in md
    assert "not run: no `--official_src=DIR` given" in md


def test_attention_rows_flops_and_kernel_agreement(smoke):
    _, md, res = smoke
    s = device.SMOKE
    rows = _table(md, "(a)")
    assert [(int(r[0]), r[1]) for r in rows] == [(n, k) for n in s.attn_tokens for k in ("cudnn", "xla", "chunked")]
    for r, raw in zip(rows, res["results"]["attention"]["rows"]):
        n = int(r[0])
        assert raw["gflop"] * 1e9 == 4 * s.attn_batch * s.heads * n * n * s.head_dim
        if r[1] == "cudnn":  # a GPU kernel: reported as skipped on the CPU, never silently replaced
            assert r[-1] == "skipped: not available on cpu"
            continue
        assert r[-1] == "yes"
        assert raw["max_abs_diff"] <= device.AGREE_TOL["float32"] == 1e-4
        assert raw["seconds"] > 0 and raw["tflops"] == pytest.approx(raw["gflop"] / 1e3 / raw["seconds"])


def test_layer_and_scan_flops_match_the_analytic_formula(smoke):
    _, md, res = smoke
    s = device.SMOKE
    n, d, m, b = s.grid[0] * s.grid[1] * s.grid[2], s.heads * s.head_dim, s.clip_tokens + s.llm_tokens, s.batch
    # wqkv, QK^T+PV, self wo, cross wq, cross wkv, cross QK^T+PV, cross wo, FFN (4x): 2 FLOPs per multiply-add.
    per_layer = b * (
        6 * n * d * d
        + 4 * n * n * d
        + 2 * n * d * d
        + 2 * n * d * d
        + 4 * m * d * d
        + 4 * n * m * d
        + 2 * n * d * d
        + 16 * n * d * d
    )
    layer = res["results"]["layer"]
    assert layer["gflop"] * 1e9 == pytest.approx(per_layer, rel=1e-12)
    assert layer["kernel"] == "chunked" and layer["tokens"] == n and layer["seconds"] > 0
    (row,) = _table(md, "(b)")
    assert row[0] == "DiTBlock forward" and float(row[5]) == pytest.approx(layer["tflops"] / 990.0, abs=1e-3)
    scan = res["results"]["scan"]["rows"]
    assert [r["layers"] for r in scan] == list(s.scan_layers) == [1, 4]
    assert (scan[1]["gflop"] - scan[0]["gflop"]) * 1e9 == pytest.approx(3 * per_layer, rel=1e-9)
    assert [int(r[0]) for r in _table(md, "(c)")] == [1, 4]


def test_vae_chunk_decodes_three_latent_frames_to_seventeen(smoke):
    _, md, res = smoke
    vae = res["results"]["vae"]
    h, w = device.SMOKE.vae_latent[1:]
    assert vae["latent"] == [1, 3, h, w, 2] and vae["output"] == [1, 17, 16 * h, 16 * w, 3]
    assert vae["finite"] and vae["peak_bytes"] > 0 and vae["temp_bytes"] > 0
    assert re.search(r"\| \(1, 3, \d+, \d+, 2\) \| \(1, 17, ", md)


def test_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(SystemExit):
        device.main(["--smoke", "--sections=attention,bogus"])
    assert "unknown section(s) ['bogus']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        device.main(["--smoke", "--official_src=/nonexistent/dir"])
    assert "--official_src must be an existing folder" in capsys.readouterr().err


def test_regenerating_benchmarks_md_keeps_the_recorded_gpu_section(tmp_path):
    from benchmarks import __main__ as runner

    gpu = runner.RECORDED[0]
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(
        "# Benchmarks\n\nheader\n\n## DiT efficiency vs the machine's matmul peak\n\nold dit\n\n"
        "## Compile time: nnx.scan vs unrolled\n\nold compile\n\n"
        f"## {gpu}\n\nGPU run pending\n\n### (a) Self-attention\n\n| a |\n"
    )
    fresh = ["## Compile time: nnx.scan vs unrolled\n\nnew compile\n"]
    merged = runner._merge_sections(str(path), fresh) + runner._recorded_sections(str(path))
    assert merged == [
        "## DiT efficiency vs the machine's matmul peak\n\nold dit\n",
        "## Compile time: nnx.scan vs unrolled\n\nnew compile\n",
        f"## {gpu}\n\nGPU run pending\n\n### (a) Self-attention\n\n| a |\n",
    ]
    assert runner._recorded_sections(str(tmp_path / "missing.md")) == []
