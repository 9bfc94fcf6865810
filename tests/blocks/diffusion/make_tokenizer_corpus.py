"""The CLIP tokenizers the tokenizer test holds loopserve's to, and the ids
transformers gives a corpus of texts.

    python make_tokenizer_corpus.py OUT_DIR

writes OUT_DIR/sd15 (Stable Diffusion 1.x's tokenizer: pads with
<|endoftext|>) and OUT_DIR/sdxl (SDXL's second tokenizer: pads with "!"),
each as transformers' CLIPTokenizer saves it, built from the real CLIP
vocabulary (open-clip-torch's bpe_simple_vocab_16e6.txt.gz), and
OUT_DIR/corpus.txt: one line per (text, tokenizer), `HEX_UTF8 NAME IDS...`,
the ids of `tokenizer(text, padding="max_length", max_length=77,
truncation=True)` from the tokenizer transformers loads back from the
folder (as DiffusionPipeline.from_pretrained loads it).
"""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "testing"))
from clip_vocab import write_clip_tokenizer  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

WORDS = """a photo of an astronaut riding horse on mars the quick brown fox
jumps over lazy dog portrait lighthouse at dusk oil painting by greg
rutkowski trending artstation 8k hdr highly detailed cinematic lighting
masterpiece best quality ultra-detailed bokeh 35mm f/1.8 octane render
unreal engine sci-fi cyberpunk city neon rain watercolor sketch""".split()
PIECES = [
    "café", "naïve", "résumé", "Ångström", "ÉCOLE", "e\u0301", "A\u030a",
    "Straße", "STRASSE", "ẞ", "İstanbul", "ΣΑΣ", "Σ", "ǅ", "ﬁ", "ﬀ",
    "Ｆｕｌｌｗｉｄｔｈ", "１２３", "東京タワー", "中文字符", "한국어", "русский",
    "Ελληνικά", "עברית", "العربية", "हिन्दी", "ไทย", "😀", "👍🏽", "👨‍👩‍👧",
    "🇫🇷", "❤️", "✨", "🔥🔥", "©", "®", "™", "°", "½", "²", "Ⅷ", "٣",
    "it's", "DON'T", "we'll", "they're", "I'd", "you've", "I'm", "'s",
    "''", "'", "\"", "!!", "!", "?!", "...", "…", "—", "–", "&amp;", "<b>",
    "</w>", "<|startoftext|>", "<|endoftext|>", "<|endoftext", "|>",
    "(masterpiece:1.2)", "[cat]", "{x}", "a_b", "a-b", "a/b", "#tag", "@me",
    "$100", "50%", "3.14159", "1,000,000", "2024-01-01", "v2.1", "x86_64",
    "\t", "\n", "  ", "\u00a0", "\u3000", "\u2028", "\u0085", "\x1c",
    "\u200b", "\ufeff", "\u180e", "\x00", "\x7f", "\u0301", "\ufffd",
]


def random_text(rng):
    kind = rng.random()
    if kind < 0.05:
        return ""
    if kind < 0.1:  # over-long: past 77 tokens, or one very long word
        if rng.random() < 0.5:
            return " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 200)))
        return rng.choice("ab!é1") * rng.randint(50, 600)
    if kind < 0.2:  # random code points from the planes prompts come from
        return "".join(random_char(rng) for _ in range(rng.randint(1, 40)))
    parts = []
    for _ in range(rng.randint(1, 20)):
        r = rng.random()
        if r < 0.5:
            word = rng.choice(WORDS)
            parts.append(word.upper() if rng.random() < 0.1 else word)
        elif r < 0.9:
            parts.append(rng.choice(PIECES))
        else:
            parts.append(random_char(rng))
        parts.append(rng.choice([" ", " ", " ", "", ", ", "  ", "\n"]))
    return "".join(parts)


def random_char(rng):
    start, end = rng.choice([(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x52f),
                             (0x590, 0x6ff), (0x900, 0x97f), (0x1e00, 0x1fff),
                             (0x2000, 0x2bff), (0x3000, 0x30ff),
                             (0x4e00, 0x9fff), (0xac00, 0xd7a3),
                             (0xff00, 0xffef), (0x1f300, 0x1faff),
                             (0x0, 0x1f)])
    return chr(rng.randint(start, end))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tokenizers = {
        "sd15": write_clip_tokenizer(os.path.join(out, "sd15")),
        "sdxl": write_clip_tokenizer(os.path.join(out, "sdxl"), pad_token="!"),
    }
    loaded = {name: CLIPTokenizer.from_pretrained(path)
              for name, path in tokenizers.items()}
    rng = random.Random(20261207)
    texts = PIECES + [random_text(rng) for _ in range(10000)]
    with open(os.path.join(out, "corpus.txt"), "w") as f:
        for name, tokenizer in loaded.items():
            ids = tokenizer(texts, padding="max_length", max_length=77,
                            truncation=True).input_ids
            for text, row in zip(texts, ids):
                f.write(f"{text.encode().hex()} {name} "
                        f"{' '.join(map(str, row))}\n")
    print(f"{len(texts)} texts, {len(loaded)} tokenizers -> {out}")


if __name__ == "__main__":
    main()
