"""Tokenizers of the two text encoders, wrapped as the release wraps them.

- `StepTokenizer`: the Step-1 sentencepiece model (`step1_chat_tokenizer.model`). Each prompt becomes
  [BOS=1, pieces..., EOS=2] padded with PAD=2 to `max_length` (320); prompts are truncated to
  `max_length - 2` pieces so BOS and EOS always fit; the mask is 1 on BOS..EOS, 0 on padding.
- `ClipTokenizer`: HunyuanCLIP's BERT wordpiece tokenizer (`hunyuan_clip/tokenizer/`) through
  `transformers`, padded / truncated to `max_length` (77) with [CLS] ... [SEP].

Both return host numpy arrays `(ids int32 [B, L], mask int32 [B, L])`.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["StepTokenizer", "ClipTokenizer", "as_prompt_list", "words_outside"]


def as_prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """A str or a non-empty sequence of str -> list[str]; anything else is a ValueError."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Sequence):
        raise ValueError(f"prompts must be a str or a list of str; got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts must be a str or a non-empty list of str; got an empty list")
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"prompts must be a str or a list of str; got an element of type {type(p).__name__}")
    return prompts


class StepTokenizer:
    """`StepTokenizer(model_file, max_length=320)(prompts) -> (ids int32 [B, L], mask int32 [B, L])`."""

    BOS = 1
    EOS = 2
    PAD = 2  # the release pads with EOS

    def __init__(self, model_file: str | os.PathLike, max_length: int = 320):
        import sentencepiece

        model_file = os.fspath(model_file)
        if os.path.isdir(model_file):
            model_file = os.path.join(model_file, "step1_chat_tokenizer.model")
        if not os.path.isfile(model_file):
            raise FileNotFoundError(
                f"{model_file}: sentencepiece model not found (expected step1_chat_tokenizer.model)"
            )
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for BOS and EOS); got {max_length}")
        self.model_file = model_file
        self.max_length = int(max_length)
        self._sp = sentencepiece.SentencePieceProcessor(model_file=model_file)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def tokenize(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        prompts = as_prompt_list(prompts)
        n = self.max_length
        ids = np.full((len(prompts), n), self.PAD, dtype=np.int32)
        mask = np.zeros((len(prompts), n), dtype=np.int32)
        for row, text in enumerate(prompts):
            tokens = [self.BOS] + self.tokenize(text)[: n - 2] + [self.EOS]  # keep room for BOS/EOS
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask


class ClipTokenizer:
    """`ClipTokenizer(folder_or_vocab, max_length=77)(prompts) -> (ids int32 [B, L], mask int32 [B, L])`.

    `folder_or_vocab` is the release's `hunyuan_clip/` folder, its `tokenizer/` folder, or a
    `vocab.txt` file (then the BERT defaults apply: lower-casing, [CLS]/[SEP]/[PAD])."""

    def __init__(self, folder_or_vocab: str | os.PathLike, max_length: int = 77):
        from transformers import BertTokenizer

        path = os.fspath(folder_or_vocab)
        if os.path.isdir(path) and os.path.isdir(os.path.join(path, "tokenizer")):
            path = os.path.join(path, "tokenizer")
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "vocab.txt")):
                raise FileNotFoundError(f"{path}: no vocab.txt (expected the release's hunyuan_clip/tokenizer folder)")
            self._tok = BertTokenizer.from_pretrained(path)
        elif os.path.isfile(path):
            # transformers 5 takes the vocab file as `vocab`, 4.x as `vocab_file`.
            params = inspect.signature(BertTokenizer.__init__).parameters
            self._tok = BertTokenizer(**{("vocab_file" if "vocab_file" in params else "vocab"): path})
        else:
            raise FileNotFoundError(f"{path}: not found (expected a BERT tokenizer folder or a vocab.txt file)")
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]); got {max_length}")
        self.path = path
        self.max_length = int(max_length)

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def __call__(self, prompts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        prompts = as_prompt_list(prompts)
        enc = self._tok(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_attention_mask=True,
        )
        ids = np.asarray(enc["input_ids"], dtype=np.int32)
        mask = np.asarray(enc["attention_mask"], dtype=np.int32)
        return ids, mask

    def whole_words(self) -> frozenset[str]:
        """The vocabulary's whole alphabetic words (no `##` continuations, no `[SPECIAL]` tokens)."""
        return frozenset(w for w in self._tok.get_vocab() if w.isalpha() and w.isascii())


_WORD = re.compile(r"[a-z]+")


def words_outside(prompt: str, vocabulary: frozenset[str]) -> list[str]:
    """The prompt's lower-cased ASCII words that are not in `vocabulary`, unique, in order."""
    return list(dict.fromkeys(w for w in _WORD.findall(prompt.lower()) if w not in vocabulary))
