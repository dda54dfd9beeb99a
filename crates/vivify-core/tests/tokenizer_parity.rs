//! Parity of `ClipTokenizer` with transformers 5.24's `CLIPTokenizer`, on the prompts recorded by
//! tools/parity/tokenizer_fixtures.py. Only open_clip's BPE file is committed; vocab.json and
//! merges.txt (and tokenizer.json) are rebuilt here exactly as the script builds them.

mod common;

use flate2::read::GzDecoder;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
use vivify_core::models::tokenizer::ClipTokenizer;

#[derive(serde::Deserialize)]
struct Expected {
    ids: Vec<u32>,
    unpadded_len: usize,
    count: usize,
}

#[derive(serde::Deserialize)]
struct Prompt {
    text: String,
    #[serde(flatten)]
    expected: Expected,
}

#[derive(serde::Deserialize)]
struct Variant {
    files: Map<String, Value>,
    /// "pairs" or "strings": the directory has a tokenizer.json with merges in that form.
    tokenizer_json: Option<String>,
    vocab_files: bool,
    pad_id: u32,
    /// Prompts (by index) whose unpadded ids differ from the main ones.
    differing: HashMap<String, Expected>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    max_length: usize,
    files: Map<String, Value>,
    tokenizer_json_skeleton: Map<String, Value>,
    variants: HashMap<String, Variant>,
    prompts: Vec<Prompt>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let path = common::fixtures_dir().join("tokenizer/prompts.json");
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

/// GPT-2 / CLIP's byte -> character table, in the order of `bytes_to_unicode().values()`.
fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<char> = printable
        .iter()
        .filter_map(|&c| char::from_u32(c))
        .collect();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            chars.push(char::from_u32(256 + n).unwrap());
            n += 1;
        }
    }
    chars
}

/// vocab and merges built from open_clip's BPE file as CLIP's SimpleTokenizer does.
fn vocab_and_merges() -> &'static (Vec<String>, Vec<String>) {
    static VM: OnceLock<(Vec<String>, Vec<String>)> = OnceLock::new();
    VM.get_or_init(|| {
        let path = common::fixtures_dir().join("tokenizer/bpe_simple_vocab_16e6.txt.gz");
        let mut text = String::new();
        GzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        let merges: Vec<String> = lines[1..49152 - 256 - 2 + 1]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bytes: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        let mut vocab = bytes.clone();
        vocab.extend(bytes.iter().map(|b| format!("{b}</w>")));
        vocab.extend(
            merges
                .iter()
                .map(|m| m.split_whitespace().collect::<String>()),
        );
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        (vocab, merges)
    })
}

fn vocab_json() -> Value {
    let (vocab, _) = vocab_and_merges();
    Value::Object(
        vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), Value::from(i)))
            .collect(),
    )
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// Writes a tokenizer directory: the given JSON files, vocab.json + merges.txt and/or a
/// tokenizer.json (the recorded skeleton with the model's vocab and merges filled in).
fn write_dir(
    dir: &Path,
    files: &Map<String, Value>,
    vocab_files: bool,
    tokenizer_json: Option<&str>,
) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        write_json(&dir.join(name), content);
    }
    let (_, merges) = vocab_and_merges();
    if vocab_files {
        write_json(&dir.join("vocab.json"), &vocab_json());
        std::fs::write(
            dir.join("merges.txt"),
            format!("#version: 0.2\n{}\n", merges.join("\n")),
        )
        .unwrap();
    }
    if let Some(form) = tokenizer_json {
        let merges: Vec<Value> = match form {
            "pairs" => merges
                .iter()
                .map(|m| Value::from(m.split(' ').collect::<Vec<_>>()))
                .collect(),
            "strings" => merges.iter().map(|m| Value::from(m.as_str())).collect(),
            other => panic!("unknown tokenizer.json merges form {other}"),
        };
        let mut json = fixture().tokenizer_json_skeleton.clone();
        let model = json
            .get_mut("model")
            .and_then(Value::as_object_mut)
            .unwrap();
        model.insert("vocab".into(), vocab_json());
        model.insert("merges".into(), Value::from(merges));
        write_json(&dir.join("tokenizer.json"), &Value::Object(json));
    }
}

fn published_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("published");
    write_dir(&dir, &fixture().files, true, None);
    dir
}

#[test]
fn vocabulary_is_clips() {
    let (vocab, merges) = vocab_and_merges();
    assert_eq!((vocab.len(), merges.len()), (49408, 48894));
    let id = |t: &str| vocab.iter().position(|v| v == t).unwrap();
    assert_eq!(id("!"), 0);
    assert_eq!(id("!</w>"), 256);
    assert_eq!(id("photo</w>"), 1125);
    assert_eq!(id("<|endoftext|>"), 49407);
}

#[test]
fn published_layout_matches_transformers() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let tok = ClipTokenizer::from_dir(published_dir(tmp.path())).unwrap();
    assert_eq!(tok.max_length(), f.max_length);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (49406, 49407, 0)
    );
    let mut mismatches = Vec::new();
    for (i, p) in f.prompts.iter().enumerate() {
        let e = &p.expected;
        let ids = tok.encode(&p.text).unwrap();
        let unpadded = tok.encode_unpadded(&p.text).unwrap();
        let count = tok.count_tokens(&p.text).unwrap();
        if ids != e.ids || unpadded[..] != e.ids[..e.unpadded_len] || count != e.count {
            mismatches.push(format!(
                "prompt {i} {:?}:\n  ours   {ids:?} count {count}\n  theirs {:?} count {}",
                p.text, e.ids, e.count
            ));
        }
    }
    println!(
        "{} of {} prompts identical",
        f.prompts.len() - mismatches.len(),
        f.prompts.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn variant_layouts_match_transformers() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let mut names: Vec<&String> = f.variants.keys().collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for name in names {
        let v = &f.variants[name];
        let dir = tmp.path().join(name);
        write_dir(&dir, &v.files, v.vocab_files, v.tokenizer_json.as_deref());
        let tok = ClipTokenizer::from_dir(&dir).unwrap();
        assert_eq!(tok.pad_id(), v.pad_id, "{name}: pad id");
        for (i, p) in f.prompts.iter().enumerate() {
            let e = v.differing.get(&i.to_string()).unwrap_or(&p.expected);
            let mut expected = e.ids[..e.unpadded_len].to_vec();
            expected.resize(f.max_length, v.pad_id);
            let ids = tok.encode(&p.text).unwrap();
            assert_eq!(ids, expected, "{name}: prompt {i} {:?}", p.text);
            assert_eq!(tok.count_tokens(&p.text).unwrap(), e.count, "{name}: {i}");
        }
        println!(
            "{name}: {} prompts identical ({} differ from the published layout, as in transformers)",
            f.prompts.len(),
            v.differing.len()
        );
    }
}

#[test]
fn tokenizer_json_wins_over_vocab_files() {
    // With both present transformers reads tokenizer.json; a broken merges.txt is not read.
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = published_dir(tmp.path());
    write_dir(&dir, &Map::new(), false, Some("pairs"));
    std::fs::write(dir.join("merges.txt"), "not a merge file\n").unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    for p in f.prompts.iter().take(50) {
        assert_eq!(tok.encode(&p.text).unwrap(), p.expected.ids, "{:?}", p.text);
    }
}

#[test]
fn pad_token_comes_from_tokenizer_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = published_dir(tmp.path());
    let text = "a photo of a cat!";
    let before = ClipTokenizer::from_dir(&dir).unwrap().encode(text).unwrap();
    assert_eq!(
        &before[..9],
        &[49406, 320, 1125, 539, 320, 2368, 0, 49407, 0]
    );

    // The legacy special_tokens_map.json overrides the config, as in transformers, so change
    // the config alone without it.
    let mut config = fixture().files["tokenizer_config.json"].clone();
    config["pad_token"] = Value::from("<|endoftext|>");
    write_json(&dir.join("tokenizer_config.json"), &config);
    std::fs::remove_file(dir.join("special_tokens_map.json")).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.pad_id(), 49407);
    let after = tok.encode(text).unwrap();
    // "!" is no longer a special token either: it becomes "!</w>" (256).
    assert_eq!(
        &after[..9],
        &[49406, 320, 1125, 539, 320, 2368, 256, 49407, 49407]
    );
    assert!(after[8..].iter().all(|&id| id == 49407));
}

fn load_err(dir: &Path) -> String {
    ClipTokenizer::from_dir(dir).unwrap_err().to_string()
}

#[test]
fn missing_or_corrupt_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = published_dir(tmp.path());
    let merges = std::fs::read(dir.join("merges.txt")).unwrap();

    std::fs::remove_file(dir.join("merges.txt")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("merges.txt"), "{err}");

    std::fs::write(dir.join("merges.txt"), "#version: 0.2\ni n\nt h e\n").unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("merges.txt") && err.contains("line 3"),
        "{err}"
    );

    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n☃☃ x\n").unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("merges.txt") && err.contains("\"☃☃\""),
        "{err}"
    );

    std::fs::write(dir.join("merges.txt"), &merges).unwrap();
    std::fs::write(dir.join("vocab.json"), "{\"a\": 0,").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("vocab.json"), "{err}");

    std::fs::remove_file(dir.join("vocab.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("vocab.json"), "{err}");

    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"model\": {\"type\": \"BPE\"}}",
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab"),
        "{err}"
    );

    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    write_json(&dir.join("vocab.json"), &vocab_json());
    std::fs::write(dir.join("tokenizer_config.json"), "[1, 2]").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("tokenizer_config.json"), "{err}");
}

#[test]
fn any_text_encodes_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = ClipTokenizer::from_dir(published_dir(tmp.path())).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let pool = [
        "a",
        " ",
        "\n",
        "!",
        "'",
        "s",
        "<|endoftext|>",
        "<|",
        "|>",
        "\u{301}",
        "\u{130}",
        "Σ",
        "é",
        "猫",
        "😀",
        "\u{200d}",
        "\u{fe0f}",
        "\u{0}",
        "\u{ffff}",
        "1",
        "²",
        "\u{3000}",
    ];
    for _ in 0..300 {
        let mut text = String::new();
        for _ in 0..rng.random_range(0..120) {
            if rng.random_bool(0.3) {
                text.push(char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'));
            } else {
                text.push_str(pool[rng.random_range(0..pool.len())]);
            }
        }
        let ids = tok.encode(&text).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], 49406);
        let n = tok.encode_unpadded(&text).unwrap().len();
        assert_eq!(ids[n - 1], 49407);
        assert!(tok.count_tokens(&text).unwrap() >= n);
    }
    let long = "word ".repeat(100_000);
    assert_eq!(tok.count_tokens(&long).unwrap(), 100_002);
    assert_eq!(tok.encode(&long).unwrap()[76], 49407);
}
