"""Tokenizers: the release's Step wrapping (BOS/EOS/PAD, truncation, mask) and the BERT tokenizer."""

import io

import numpy as np
import pytest
import sentencepiece as spm

from stepvideo_jax.testing import build_tiny_tokenizers
from stepvideo_jax.text import ClipTokenizer, StepTokenizer

LINES = [
    "a cat walks along the beach at sunset",
    "a dog runs through a green field",
    "the camera pans slowly over the city",
    "waves crash against the rocks",
]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES),
        model_writer=model,
        vocab_size=40,
        hard_vocab_limit=False,
        model_type="bpe",
        character_coverage=1.0,
        num_threads=1,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "step1_chat_tokenizer.model"
    path.write_bytes(model.getvalue())
    return str(path)


def test_step_ids_padding_and_mask(spm_model):
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    tok = StepTokenizer(spm_model, max_length=16)
    ids, mask = tok(["a cat walks", "the dog"])
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == (2, 16)
    for row, text in enumerate(["a cat walks", "the dog"]):
        pieces = sp.encode(text)
        n = len(pieces) + 2
        assert ids[row].tolist() == [1] + pieces + [2] * (16 - n + 1)  # EOS, then PAD (= EOS id)
        assert mask[row].tolist() == [1] * n + [0] * (16 - n)
    assert len(sp.encode("a cat walks")) >= 3 and sp.encode("a cat walks")[0] > 2  # real pieces, not specials


def test_step_truncation_keeps_bos_and_eos(spm_model):
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    text = " ".join(LINES * 40)
    pieces = sp.encode(text)
    assert len(pieces) > 320
    ids, mask = StepTokenizer(spm_model)([text])  # max_length 320 by default
    assert ids.shape == (1, 320) and mask.sum() == 320
    assert ids[0, 0] == 1 and ids[0, -1] == 2
    assert ids[0, 1:-1].tolist() == pieces[:318]


def test_step_empty_prompt_and_bad_input(spm_model):
    tok = StepTokenizer(spm_model, max_length=8)
    ids, mask = tok("")
    assert ids.tolist() == [[1, 2, 2, 2, 2, 2, 2, 2]] and mask.tolist() == [[1, 1, 0, 0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="non-empty list"):
        tok([])
    with pytest.raises(ValueError, match="list of str"):
        tok([b"bytes"])
    with pytest.raises(FileNotFoundError):
        StepTokenizer(str(spm_model) + ".missing")


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "walks", "dog", "##s", ",", "the"]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return folder


def test_clip_exact_ids_and_padding(vocab_file):
    for source in (vocab_file, vocab_file / "vocab.txt"):  # a folder or the vocab file itself
        tok = ClipTokenizer(source, max_length=10)
        ids, mask = tok(["A cat walks", "the dogs, zebra", ""])
        assert ids.dtype == np.int32 and ids.shape == (3, 10)
        assert ids[0].tolist() == [2, 5, 6, 7, 3, 0, 0, 0, 0, 0]  # lower-cased, [CLS] ... [SEP] [PAD]...
        assert ids[1].tolist() == [2, 11, 8, 9, 10, 1, 3, 0, 0, 0]  # dog ##s , [UNK]
        assert ids[2].tolist() == [2, 3] + [0] * 8
        assert mask.tolist() == [[1] * 5 + [0] * 5, [1] * 7 + [0] * 3, [1] * 2 + [0] * 8]


def test_clip_truncation_at_77(vocab_file):
    ids, mask = ClipTokenizer(vocab_file)(["a cat " * 100])
    assert ids.shape == (1, 77) and mask.sum() == 77
    assert ids[0, 0] == 2 and ids[0, -1] == 3 and ids[0, 1:4].tolist() == [5, 6, 5]


def test_tiny_tokenizers_are_deterministic(tmp_path):
    spm_a, clip_a = build_tiny_tokenizers(tmp_path / "a")
    spm_b, clip_b = build_tiny_tokenizers(tmp_path / "b")
    assert open(spm_a, "rb").read() == open(spm_b, "rb").read()
    assert open(f"{clip_a}/vocab.txt").read() == open(f"{clip_b}/vocab.txt").read()
    step_ids, step_mask = StepTokenizer(spm_a)(["a cat walks along the beach, 你好"])
    clip_ids, _ = ClipTokenizer(clip_a)(["a cat walks along the beach"])
    assert step_ids.max() < StepTokenizer(spm_a).vocab_size and step_mask.sum() > 3
    assert 0 not in step_ids[0, : step_mask.sum()]  # byte fallback: no <unk> even for unseen characters
    assert 1 not in clip_ids[0]  # every word of the training text is in the tiny vocab
