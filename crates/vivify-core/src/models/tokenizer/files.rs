//! Reading a tokenizer directory the way transformers 5.24's `CLIPTokenizer.from_pretrained` does:
//! which file wins, which special tokens exist and whether each is matched before or after
//! normalisation.

use crate::{Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// An added (special) token: a string cut out of the text before BPE and given one id.
#[derive(Clone, Debug)]
pub(super) struct TokenSpec {
    pub content: String,
    /// Matched in the normalised (lower-cased) text rather than the raw text.
    pub normalized: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub single_word: bool,
}

impl TokenSpec {
    /// A special token given as a plain string: transformers makes it `AddedToken(s, special=True)`,
    /// whose `normalized` defaults to false, so it is matched in the raw text.
    fn plain(content: &str) -> Self {
        Self {
            content: content.to_string(),
            normalized: false,
            lstrip: false,
            rstrip: false,
            single_word: false,
        }
    }

    /// A serialized `AddedToken` object. `normalized` defaults to `not special`, the default of
    /// `tokenizers.AddedToken`; `force_special` is set where transformers adds `special=True`.
    fn from_object(obj: &Map<String, Value>, force_special: bool) -> Option<Self> {
        let flag = |key: &str| obj.get(key).and_then(Value::as_bool);
        let special = force_special || flag("special").unwrap_or(false);
        Some(Self {
            content: obj.get("content")?.as_str()?.to_string(),
            normalized: flag("normalized").unwrap_or(!special),
            lstrip: flag("lstrip").unwrap_or(false),
            rstrip: flag("rstrip").unwrap_or(false),
            single_word: flag("single_word").unwrap_or(false),
        })
    }

    fn from_value(value: &Value, force_special: bool) -> Option<Self> {
        match value {
            Value::String(s) => Some(Self::plain(s)),
            Value::Object(obj) => Self::from_object(obj, force_special),
            _ => None,
        }
    }
}

/// Everything read from the directory.
pub(super) struct TokenizerFiles {
    pub vocab: HashMap<String, u32>,
    pub merges: Vec<(String, String)>,
    /// The file the vocabulary came from, for error messages.
    pub vocab_path: PathBuf,
    pub merges_path: PathBuf,
    /// Added tokens in the order transformers adds them, one per content.
    pub added: Vec<TokenSpec>,
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
    pub max_length: usize,
}

/// The length CLIP's text encoder was trained with, used when `model_max_length` is absent or
/// is transformers' "unlimited" placeholder (1e30).
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// Named special-token keys of transformers' `SPECIAL_TOKENS_ATTRIBUTES`, in its order.
const NAMED_SPECIAL: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn corrupt(path: &Path, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>> {
    let text = read_text(path)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(corrupt(path, "expected a JSON object")),
        Err(e) => Err(corrupt(path, e.to_string())),
    }
}

/// Reads an optional JSON object file; a missing file is `None`, a corrupt one an error.
fn read_optional_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    if path.is_file() {
        read_json_object(path).map(Some)
    } else {
        Ok(None)
    }
}

/// A `{token: id}` vocabulary (vocab.json, or tokenizer.json's `model.vocab`).
fn parse_vocab(path: &Path, value: &Value) -> Result<HashMap<String, u32>> {
    let entries = match value {
        Value::Object(map) => map
            .iter()
            .map(
                |(token, id)| match id.as_u64().and_then(|i| u32::try_from(i).ok()) {
                    Some(id) => Ok((token.clone(), id)),
                    None => Err(corrupt(
                        path,
                        format!("vocabulary entry {token:?} has id {id}"),
                    )),
                },
            )
            .collect::<Result<HashMap<_, _>>>()?,
        // transformers also accepts a list of tokens (or [token, score] pairs) for BPE: id = index.
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let token = match item {
                    Value::Array(pair) => pair.first().and_then(Value::as_str),
                    other => other.as_str(),
                };
                token
                    .map(|t| (t.to_string(), i as u32))
                    .ok_or_else(|| corrupt(path, format!("vocabulary entry {i} is not a token")))
            })
            .collect::<Result<HashMap<_, _>>>()?,
        _ => return Err(corrupt(path, "the vocabulary is not a JSON object")),
    };
    if entries.is_empty() {
        return Err(corrupt(path, "the vocabulary is empty"));
    }
    Ok(entries)
}

/// One merge written "left right" (merges.txt lines and the older tokenizer.json form).
fn split_merge(line: &str) -> Option<(String, String)> {
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
        _ => None,
    }
}

/// merges.txt as `tokenizers`' BPE reads it: `#version` lines skipped, every other line exactly
/// two space-separated parts. Blank lines are skipped too (the file's trailing newline).
fn parse_merges_txt(path: &Path, text: &str) -> Result<Vec<(String, String)>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with("#version") && !line.is_empty())
        .map(|(n, line)| {
            split_merge(line).ok_or_else(|| {
                corrupt(
                    path,
                    format!("line {}: expected two space-separated tokens", n + 1),
                )
            })
        })
        .collect()
}

/// tokenizer.json's `model.merges`: "a b" strings or ["a", "b"] pairs (tokenizers >= 0.20).
fn parse_merges_json(path: &Path, value: &Value) -> Result<Vec<(String, String)>> {
    let items = value
        .as_array()
        .ok_or_else(|| corrupt(path, "model.merges is not a list"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let merge = match item {
                Value::String(s) => split_merge(s),
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                    _ => None,
                },
                _ => None,
            };
            merge.ok_or_else(|| corrupt(path, format!("model.merges[{i}] is not a pair")))
        })
        .collect()
}

impl TokenizerFiles {
    pub fn read(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config = read_optional_object(&config_path)?.unwrap_or_default();
        let tokenizer_json_path = dir.join("tokenizer.json");

        // tokenizer.json wins over vocab.json + merges.txt; transformers then takes only its
        // vocabulary, merges and added tokens and rebuilds the rest from CLIPTokenizer's code.
        let mut json_added_tokens = Vec::new();
        let (vocab, merges, vocab_path, merges_path) = if tokenizer_json_path.is_file() {
            let path = &tokenizer_json_path;
            let json = read_json_object(path)?;
            let model = json
                .get("model")
                .and_then(Value::as_object)
                .ok_or_else(|| corrupt(path, "no `model` object"))?;
            if let Some(kind) = model.get("type").and_then(Value::as_str)
                && kind != "BPE"
            {
                return Err(corrupt(path, format!("model type {kind}, expected BPE")));
            }
            let vocab = parse_vocab(
                path,
                model
                    .get("vocab")
                    .ok_or_else(|| corrupt(path, "no model.vocab"))?,
            )?;
            let merges = parse_merges_json(
                path,
                model
                    .get("merges")
                    .ok_or_else(|| corrupt(path, "no model.merges"))?,
            )?;
            if let Some(Value::Array(tokens)) = json.get("added_tokens") {
                json_added_tokens = tokens.clone();
            }
            (vocab, merges, path.clone(), path.clone())
        } else {
            let vocab_path = dir.join("vocab.json");
            let text = read_text(&vocab_path)?;
            let value: Value =
                serde_json::from_str(&text).map_err(|e| corrupt(&vocab_path, e.to_string()))?;
            let vocab = parse_vocab(&vocab_path, &value)?;
            let merges_path = dir.join("merges.txt");
            let merges = parse_merges_txt(&merges_path, &read_text(&merges_path)?)?;
            (vocab, merges, vocab_path, merges_path)
        };

        // Named special tokens: CLIPTokenizer's defaults, then tokenizer_config.json.
        let mut named: Vec<(&str, Option<TokenSpec>)> = NAMED_SPECIAL
            .iter()
            .map(|&key| {
                let default = match key {
                    "bos_token" => Some(TokenSpec::plain("<|startoftext|>")),
                    "eos_token" | "unk_token" | "pad_token" => {
                        Some(TokenSpec::plain("<|endoftext|>"))
                    }
                    _ => None,
                };
                // A null or malformed entry keeps the class default.
                let spec = config
                    .get(key)
                    .and_then(|v| TokenSpec::from_value(v, false))
                    .or(default);
                (key, spec)
            })
            .collect();
        let mut extra: Vec<TokenSpec> = ["additional_special_tokens", "extra_special_tokens"]
            .iter()
            .filter_map(|key| config.get(*key).and_then(Value::as_array))
            .flatten()
            .filter_map(|v| TokenSpec::from_value(v, false))
            .collect();

        let mut added = Vec::new();
        if let Some(decoder) = config
            .get("added_tokens_decoder")
            .and_then(Value::as_object)
        {
            // Saved by transformers >= 4.34: the added tokens with their flags, by id.
            let mut entries: Vec<(u64, TokenSpec)> = decoder
                .iter()
                .filter_map(|(id, v)| {
                    let spec = v
                        .as_object()
                        .and_then(|o| TokenSpec::from_object(o, false))?;
                    Some((id.parse().ok()?, spec))
                })
                .collect();
            entries.sort_by_key(|(id, _)| *id);
            added.extend(entries.into_iter().map(|(_, spec)| spec));
        } else {
            // Legacy layout (no added_tokens_decoder): special_tokens_map.json overrides the
            // config's named tokens, then tokenizer.json's added tokens are added first.
            if let Some(map) = read_optional_object(&dir.join("special_tokens_map.json"))? {
                for (key, spec) in named.iter_mut() {
                    if let Some(v) = map.get(*key)
                        && let Some(s) = TokenSpec::from_value(v, true)
                    {
                        *spec = Some(s);
                    }
                }
                if let Some(Value::Array(items)) = map.get("additional_special_tokens") {
                    extra.extend(items.iter().filter_map(|v| TokenSpec::from_value(v, true)));
                }
            }
            added.extend(
                json_added_tokens
                    .iter()
                    .filter_map(|v| v.as_object().and_then(|o| TokenSpec::from_object(o, false))),
            );
        }
        // Named and extra special tokens whose content is not among those are added after them.
        // transformers drops only exact duplicates here, and `tokenizers` lets a later token
        // with the same content replace the earlier one's flags: with pad "<|endoftext|>" as a
        // plain string, "<|endoftext|>" ends up matched in the raw text, not the normalised one.
        let first_contents: std::collections::HashSet<String> =
            added.iter().map(|t| t.content.clone()).collect();
        let specials = named.iter().filter_map(|(_, s)| s.clone()).chain(extra);
        added.extend(specials.filter(|t| !first_contents.contains(&t.content)));
        let mut merged: Vec<TokenSpec> = Vec::with_capacity(added.len());
        for token in added.into_iter().filter(|t| !t.content.is_empty()) {
            match merged.iter_mut().find(|t| t.content == token.content) {
                Some(earlier) => *earlier = token,
                None => merged.push(token),
            }
        }
        let added = merged;

        let content = |key: &str| {
            named
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, s)| s.as_ref())
                .map(|s| s.content.clone())
                .unwrap_or_default()
        };
        let max_length = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|&n| (2..=1 << 20).contains(&n))
            .map_or(DEFAULT_MAX_LENGTH, |n| n as usize);

        Ok(Self {
            vocab,
            merges,
            vocab_path,
            merges_path,
            added,
            bos: content("bos_token"),
            eos: content("eos_token"),
            unk: content("unk_token"),
            pad: content("pad_token"),
            max_length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_txt_rules() {
        let p = Path::new("merges.txt");
        let m = parse_merges_txt(p, "#version: 0.2\na b\nab c</w>\n").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1], ("ab".to_string(), "c</w>".to_string()));
        let err = parse_merges_txt(p, "#version: 0.2\na b c\n").unwrap_err();
        assert!(err.to_string().contains("merges.txt") && err.to_string().contains("line 2"));
    }

    #[test]
    fn added_token_flag_defaults() {
        let plain = TokenSpec::from_value(&Value::from("!"), false).unwrap();
        assert!(!plain.normalized);
        let obj = serde_json::json!({"content": "<|x|>"});
        assert!(TokenSpec::from_value(&obj, false).unwrap().normalized);
        assert!(!TokenSpec::from_value(&obj, true).unwrap().normalized);
    }
}
