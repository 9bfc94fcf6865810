"""CLIP's real vocabulary as a Hugging Face tokenizer folder, built from the
BPE merges open-clip-torch ships (bpe_simple_vocab_16e6.txt.gz, installed
by scripts/setup without its dependencies: only this file is read), the way
OpenAI's CLIP builds its 49,408 tokens. Nothing is downloaded."""

import gzip
import importlib.util
import os

from transformers import CLIPTokenizer


def _bpe_file():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open-clip-torch is not installed: run scripts/setup")
    return os.path.join(spec.submodule_search_locations[0],
                        "bpe_simple_vocab_16e6.txt.gz")


def _byte_chars():
    """GPT-2's byte -> character map: printable Latin-1 bytes stand for
    themselves, the rest for 256, 257, ..."""
    printable = [b for b in range(256)
                 if ord("!") <= b <= ord("~") or 0xA1 <= b <= 0xAC or b >= 0xAE]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in printable] + [
        chars[b] for b in range(256) if b not in printable]


def clip_vocab():
    """(vocab: token -> id, merges: [("a", "b"), ...]) of CLIP's tokenizer."""
    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    tokens = _byte_chars()
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m.split(" ")) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ")) for m in merges]


def write_clip_tokenizer(path, pad_token="<|endoftext|>"):
    """Saves CLIP's tokenizer (SD 1.x's; SDXL's second with pad_token="!")
    to `path` as transformers saves it; returns `path`."""
    vocab, merges = clip_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token,
                              model_max_length=77)
    tokenizer.save_pretrained(path)
    return path
