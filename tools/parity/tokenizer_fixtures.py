"""Reference ids of transformers' CLIPTokenizer for vivify's tokenizer parity test.

Usage (from the repository root, in the parity environment):

    tools/parity/.venv/bin/python tools/parity/tokenizer_fixtures.py [--bpe PATH]

Inputs: `tests/fixtures/tokenizer/bpe_simple_vocab_16e6.txt.gz`, the BPE file shipped with
open_clip (`open_clip/bpe_simple_vocab_16e6.txt.gz` in the open-clip-torch wheel; `pip download
--no-deps open-clip-torch` and unzip it). It is the only committed tokenizer data: vocab.json and
merges.txt are rebuilt from it, here and in the Rust test, exactly as the original CLIP
`SimpleTokenizer` does:
  - merges = the file's lines [1 : 49152 - 256 - 2 + 1] (48,894 "left right" pairs);
  - vocab  = the 256 `bytes_to_unicode` characters, the same each with "</w>", each merge's
    concatenation, then "<|startoftext|>", "<|endoftext|>" (49,408 entries, ids in that order).
The script checks this is the published CLIP vocabulary (size, the ids of known tokens, and the
ids of prompts whose published encodings are well known).

It writes a tokenizer directory like the published ali-vilab/i2vgen-xl `tokenizer/` (vocab.json,
merges.txt, tokenizer_config.json with AddedToken objects and pad token "!",
special_tokens_map.json) to a temporary directory, loads it with
`transformers.CLIPTokenizer.from_pretrained` (transformers 5.24: the tokenizers-backed class) and
records, for every prompt, `tokenizer(prompt, padding="max_length", max_length=77,
truncation=True)["input_ids"]`, the unpadded truncated length and the untruncated length.

It then loads variant directories and records, for each, its pad id and the prompts whose
unpadded ids differ from the main ones (all other prompts give the main unpadded ids, padded with
the variant's pad id):
  - tokenizer_json_pairs / tokenizer_json_strings: tokenizer.json (as saved by the
    tokenizers-backed class, merges as ["a", "b"] pairs or as "a b" strings) with the saved
    tokenizer_config.json, no vocab.json/merges.txt;
  - added_tokens_decoder: a newer-style tokenizer_config.json with `added_tokens_decoder` in which
    "<|endoftext|>" is not normalized (as in SDXL's tokenizer_2);
  - pad_eos: pad token "<|endoftext|>" in both tokenizer_config.json and special_tokens_map.json;
  - pad_eos_config_only: pad token "<|endoftext|>" in tokenizer_config.json only
    (special_tokens_map.json, read for legacy configs, still says "!").
Every file a variant holds is recorded so that the Rust test writes the same directory.

Output: tests/fixtures/tokenizer/prompts.json. Deterministic (fixed seed, sorted keys).
"""

import argparse
import gzip
import hashlib
import json
import os
import random
import tempfile

import transformers
from transformers import CLIPTokenizer

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
MAX_LENGTH = 77


def bytes_to_unicode():
    """GPT-2 / CLIP's byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_vocab_and_merges(bpe_path):
    """CLIP SimpleTokenizer's construction (openai/CLIP clip/simple_tokenizer.py)."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for merge in merges:
        vocab.append("".join(merge.split()))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    return {token: i for i, token in enumerate(vocab)}, merges


def added_token(content):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def map_token(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


# The published layout (Stable Diffusion 2 / I2VGen-XL OpenCLIP tokenizer): legacy AddedToken
# objects, pad "!", and a special_tokens_map.json.
PUBLISHED_CONFIG = {
    "add_prefix_space": False,
    "bos_token": added_token("<|startoftext|>"),
    "do_lower_case": True,
    "eos_token": added_token("<|endoftext|>"),
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "hf-models/clip-vit-h-14",
    "pad_token": "!",
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": added_token("<|endoftext|>"),
}
PUBLISHED_MAP = {
    "bos_token": map_token("<|startoftext|>"),
    "eos_token": map_token("<|endoftext|>"),
    "pad_token": "!",
    "unk_token": map_token("<|endoftext|>"),
}


def decoder_entry(content, normalized):
    return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False,
            "single_word": False, "special": True}


DECODER_CONFIG = {
    "add_prefix_space": False,
    "added_tokens_decoder": {
        "0": decoder_entry("!", False),
        "49406": decoder_entry("<|startoftext|>", True),
        "49407": decoder_entry("<|endoftext|>", False),
    },
    "bos_token": "<|startoftext|>",
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "<|endoftext|>",
    "errors": "replace",
    "model_max_length": 77,
    "pad_token": "!",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}


def prompts():
    fixed = [
        "", " ", "  ", "\n", "\t \n", "a", "A", "a photo of a cat",
        "A photo of a cat", "A PHOTO OF A CAT", "a photo of an astronaut riding a horse on mars",
        "Robot dancing in Times Square", "a corgi wearing sunglasses, surfing a wave, 4k, highly detailed",
        "cinematic shot of a lighthouse at dusk, volumetric fog, golden hour",
        "masterpiece, best quality, ultra-detailed, 8k uhd, dslr, soft lighting, film grain, Fujifilm XT3",
        "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, disconnected limbs, Ugly faces, incomplete arms",
        # apostrophes and contractions
        "it's", "It's a dog's life", "don't stop", "I'M HERE", "we'll see", "they'd've", "you're", "I've",
        "we're", "she'd", "'quoted'", "rock'n'roll", "o'clock", "''s", "'s'", "it ' s", "it’s (curly)",
        "the cats' toys", "'''", "ma'am", "y'all'd've",
        # the pad token "!" and other punctuation
        "wow!", "!!!", "hello ! world", "!a!", "hi!!!!!!", "a!b", "!", "what?!", "yes.", "...", "…",
        "a, b; c: d", "(parentheses) [brackets] {braces}", "a/b\\c|d", "@user #hashtag $100 %50 ^ & * _ + = ~ `",
        "--flag -x", "a--b", "snake_case_name", "CamelCaseName", "e-mail", "ratio 16:9",
        "\"double quotes\"", "«guillemets»", "„Anführungszeichen“", "『括弧』",
        # special token strings
        "<|startoftext|>", "<|endoftext|>", "<|ENDOFTEXT|>", "<|StartOfText|>",
        "a<|endoftext|>b", "<|endoftext|", "|endoftext|>", "<|startoftext|><|endoftext|>",
        "<|endoftext|><|endoftext|>", "a photo <|endoftext|> of a cat", "x<|startoftext|>!",
        "<|endoftext|>!", "<|ENDOFTEXT|>!", "<|end of text|>", "<|>", "<||>",
        # whitespace
        "  leading and trailing  ", "a\n\nb", "a\r\nb", "tab\tseparated\tvalues", "many     spaces",
        "nbsp\u00a0here", "ideographic\u3000space", "line\u2028separator", "para\u2029sep", "nel\u0085x",
        "thin\u2009space", "zero\u200bwidth", "bom\ufeffin", "word\u00adhyphen", "\u180emongolian",
        "\x0b\x0c vertical tab and form feed", "a\u202fb\u205fc\u1680d",
        # control and odd code points
        "nul\x00byte", "bell\x07", "del\x7f", "esc\x1b[31mred\x1b[0m", "\ufffd", "private\ue000use",
        "\uffff", "\U0010fffd", "\u0301 leading combining", "a\u0301\u0302\u0303",
        # combining marks newer than Unicode 9: tokenizers' NFC (Unicode 9 tables) keeps this order
        "q\u0301\u1ac3q", "b\u0301\u1aee'", "x\u1aeb\u302e", "e\u0316\u0301\u1ac1",
        # accents, normalisation
        "café", "cafe\u0301", "CAFÉ", "CAFE\u0301", "naïve résumé", "Ångström \u212bngstr\u00f6m",
        "\u212a kelvin", "ﬁne ﬂour", "Straße STRASSE", "ẞ capital sharp s", "İstanbul ISTANBUL ıi",
        "ΣΑΣ σας Σ", "Ὀδυσσεύς", "Ǆ ǅ ǆ", "ﬀ ﬃ", "Ⓐ ⓑ", "𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３",
        "Ḱ̃ stacked", "Ｈｅｌｌｏ！", "á à â ä ã å ā ă ą",
        # scripts
        "Привет, мир! Москва", "Γειά σου Κόσμε", "שלום עולם", "مرحبا بالعالم", "नमस्ते दुनिया",
        "สวัสดีชาวโลก", "你好，世界！", "一只猫坐在窗台上", "日本語のテキストです。カタカナ", "ｶﾀｶﾅ",
        "안녕하세요 세계", "가 jamo", "Tiếng Việt có dấu", "Ελληνικά και English mixed",
        "ግዕዝ", "ᚠᚢᚦᚨᚱᚲ", "𓀀𓀁 hieroglyphs", "ꦗꦮ", "Հայերեն", "ქართული",
        # emoji
        "😀", "a cat 🐱 and a dog 🐶", "👨‍👩‍👧‍👦 family", "👍🏽 thumbs", "🇯🇵 flag", "❤️ heart", "✨✨✨",
        "🔥fire🔥", "☕️ coffee", "1️⃣ keycap", "🏳️‍🌈", "©®™",
        # digits
        "0", "1234567890", "3.14159", "1,000,000", "2024-01-01", "v2.0.1", "4k 8K 1080p 60fps",
        "x²+y³", "½ ¼ ¾", "Ⅻ roman", "٣٤٥ arabic-indic", "१२३ devanagari", "①②③", "𝟙𝟚𝟛", "0x1F",
        "100%", "-5 +5", "1e-5", "12:30pm", "№7",
        # html-ish
        "<b>bold</b>", "<a href='https://example.com'>link</a>", "&amp; &lt;tag&gt; &#39;quote&#39; &quot;",
        "a&nbsp;b", "<br/>line<br />break", "<!-- comment -->", "<script>alert('x')</script>",
        "https://example.com/path?query=1&x=y#frag", "user@example.com", "C:\\Users\\name\\file.txt",
        "```code```", "**markdown** _em_ `tick`", "#hashtag @mention",
    ]
    # Around the limit: 75 content tokens fit exactly; 76 and more are truncated.
    for n in (73, 74, 75, 76, 77, 80):
        fixed.append(" ".join(["cat"] * n))
    fixed.append("!" * 100)
    fixed.append("a " * 200)
    fixed.append(
        "A breathtaking panoramic view of an ancient mountain monastery perched on a cliff, "
        "surrounded by swirling clouds and cherry blossom trees in full bloom, with monks in "
        "saffron robes walking along a narrow stone path, prayer flags fluttering in the wind, "
        "soft morning light filtering through the mist, ultra realistic, 8k, cinematic "
        "composition, depth of field, trending on artstation, by Greg Rutkowski and Alphonse Mucha"
    )
    fixed.append("超长的中文提示词" * 30)
    fixed.append("😀" * 60)
    fixed.append("The quick brown fox jumps over the lazy dog. " * 8)

    # Seeded random mixtures of words, punctuation, case and whitespace.
    rng = random.Random(20240611)
    words = ["cat", "Dog", "SUNSET", "it's", "don't", "café", "naïve", "東京", "猫", "🐱", "!", "?!",
             "<|endoftext|>", "<|STARTOFTEXT|>", "3.5", "42", "x²", "rock'n'roll", "e\u0301", "Σ",
             "hello", "world", "<b>", "&amp;", "--", "...", "Ⅷ", "ﬁ", "İ", "ß", "δ", "ψ", "mañana",
             "a", "the", "of", "painting", "photorealistic", "4k", "(", ")", "'", "\"", "#", "_",
             "водопад", "قمر", "ดาว", "별", "ᄒ"]
    seps = [" ", "  ", "\n", "\t", "", ", ", " \u00a0", "\u3000", "!", "'"]
    for _ in range(80):
        n = rng.randint(1, 30)
        parts = []
        for _ in range(n):
            word = rng.choice(words)
            r = rng.random()
            if r < 0.15:
                word = word.upper()
            elif r < 0.25:
                word = word.title()
            parts.append(word + rng.choice(seps))
        fixed.append("".join(parts))
    return fixed


def encode_all(tok, texts):
    out = []
    for text in texts:
        padded = tok(text, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]
        unpadded = tok(text, max_length=MAX_LENGTH, truncation=True)["input_ids"]
        full = tok(text)["input_ids"]
        assert len(padded) == MAX_LENGTH, (text, len(padded))
        assert padded[: len(unpadded)] == unpadded
        out.append({"ids": padded, "unpadded_len": len(unpadded), "count": len(full)})
    return out


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)


def write_vocab_files(d, vocab, merges):
    write_json(os.path.join(d, "vocab.json"), vocab)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bpe", default=os.path.join(FIXTURE_DIR, "bpe_simple_vocab_16e6.txt.gz"))
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()

    with open(args.bpe, "rb") as f:
        bpe_sha256 = hashlib.sha256(f.read()).hexdigest()
    vocab, merges = build_vocab_and_merges(args.bpe)
    # The published CLIP vocabulary: 49,408 entries, 48,894 merges, these ids.
    assert len(vocab) == 49408 and len(merges) == 48894, (len(vocab), len(merges))
    known = {"!": 0, "!</w>": 256, "a</w>": 320, "photo</w>": 1125, "of</w>": 539, "cat</w>": 2368,
             "<|startoftext|>": 49406, "<|endoftext|>": 49407}
    for token, i in known.items():
        assert vocab[token] == i, (token, vocab[token], i)

    texts = prompts()
    tmp = tempfile.mkdtemp(prefix="vivify-tok-")
    main_dir = os.path.join(tmp, "published")
    os.makedirs(main_dir)
    write_vocab_files(main_dir, vocab, merges)
    write_json(os.path.join(main_dir, "tokenizer_config.json"), PUBLISHED_CONFIG)
    write_json(os.path.join(main_dir, "special_tokens_map.json"), PUBLISHED_MAP)
    tok = CLIPTokenizer.from_pretrained(main_dir)
    assert type(tok).__name__ == "CLIPTokenizer" and tok.is_fast
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 0)
    expected = encode_all(tok, texts)

    # The tokenizer.json the tokenizers-backed class saves; the Rust test fills in its model's
    # vocab and merges, so the rest is recorded as a skeleton.
    saved = os.path.join(tmp, "saved")
    tok.save_pretrained(saved)
    with open(os.path.join(saved, "tokenizer.json"), encoding="utf-8") as f:
        tokenizer_json = json.load(f)
    with open(os.path.join(saved, "tokenizer_config.json"), encoding="utf-8") as f:
        saved_config = json.load(f)
    assert tokenizer_json["model"]["merges"] == [m.split(" ") for m in merges]
    assert tokenizer_json["model"]["vocab"] == vocab
    skeleton = dict(tokenizer_json)
    skeleton["model"] = {k: v for k, v in tokenizer_json["model"].items() if k not in ("vocab", "merges")}

    pad_eos_config = dict(PUBLISHED_CONFIG, pad_token="<|endoftext|>")
    variants = {
        "tokenizer_json_pairs": {"files": {"tokenizer_config.json": saved_config},
                                 "tokenizer_json": "pairs", "vocab_files": False},
        "tokenizer_json_strings": {"files": {"tokenizer_config.json": saved_config},
                                   "tokenizer_json": "strings", "vocab_files": False},
        "added_tokens_decoder": {"files": {"tokenizer_config.json": DECODER_CONFIG},
                                 "tokenizer_json": None, "vocab_files": True},
        "pad_eos": {"files": {"tokenizer_config.json": pad_eos_config,
                              "special_tokens_map.json": dict(PUBLISHED_MAP, pad_token="<|endoftext|>")},
                    "tokenizer_json": None, "vocab_files": True},
        "pad_eos_config_only": {"files": {"tokenizer_config.json": pad_eos_config,
                                          "special_tokens_map.json": PUBLISHED_MAP},
                                "tokenizer_json": None, "vocab_files": True},
    }
    for name, variant in variants.items():
        d = os.path.join(tmp, name)
        os.makedirs(d)
        for file_name, content in variant["files"].items():
            write_json(os.path.join(d, file_name), content)
        if variant["vocab_files"]:
            write_vocab_files(d, vocab, merges)
        if variant["tokenizer_json"]:
            full = dict(skeleton)
            full["model"] = dict(skeleton["model"], vocab=vocab, merges=(
                [m.split(" ") for m in merges] if variant["tokenizer_json"] == "pairs" else merges))
            write_json(os.path.join(d, "tokenizer.json"), full)
        vtok = CLIPTokenizer.from_pretrained(d)
        got = encode_all(vtok, texts)
        # Padding is recorded as the variant's pad id; `differing` holds the prompts whose
        # unpadded ids (or counts) differ, with their full padded ids.
        variant["pad_id"] = vtok.pad_token_id
        for g in got:
            n = g["unpadded_len"]
            assert g["ids"][n:] == [vtok.pad_token_id] * (MAX_LENGTH - n)
        variant["differing"] = {
            str(i): g for i, (g, e) in enumerate(zip(got, expected))
            if (g["ids"][: g["unpadded_len"]], g["count"]) != (e["ids"][: e["unpadded_len"]], e["count"])
        }
        padded_differ = sum(g != e for g, e in zip(got, expected))
        print(f"{name}: pad id {vtok.pad_token_id}; unpadded ids differ for {len(variant['differing'])} "
              f"of {len(texts)} prompts, padded ids for {padded_differ}")

    # The full saved directory (all of save_pretrained's tokenizer.json) must agree too.
    saved_ids = encode_all(CLIPTokenizer.from_pretrained(saved), texts)
    saved_differing = sum(g != e for g, e in zip(saved_ids, expected))
    print(f"save_pretrained directory: {saved_differing} prompts differ")

    out = {
        "about": "tools/parity/tokenizer_fixtures.py: transformers CLIPTokenizer ids, "
                 "padding='max_length', max_length=77, truncation=True",
        "transformers": transformers.__version__,
        "bpe_sha256": bpe_sha256,
        "max_length": MAX_LENGTH,
        "files": {"tokenizer_config.json": PUBLISHED_CONFIG, "special_tokens_map.json": PUBLISHED_MAP},
        "tokenizer_json_skeleton": skeleton,
        "save_pretrained_differing": saved_differing,
        "variants": variants,
        "prompts": [dict(text=t, **e) for t, e in zip(texts, expected)],
    }
    os.makedirs(FIXTURE_DIR, exist_ok=True)
    path = os.path.join(FIXTURE_DIR, "prompts.json")
    with open(path, "w", encoding="utf-8") as f:
        # One prompt per line keeps the file small and its diffs readable.
        f.write(json.dumps(out, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
                .replace('{"count"', '\n{"count"'))
        f.write("\n")
    print(f"wrote {path}: {len(texts)} prompts, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
