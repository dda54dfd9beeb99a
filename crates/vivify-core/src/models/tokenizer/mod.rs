//! The CLIP byte-level BPE tokenizer, giving the ids transformers 5.24's `CLIPTokenizer` gives for
//! `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`.
//!
//! transformers 5 has only the `tokenizers`-backed CLIP tokenizer (no ftfy, no HTML unescaping,
//! unlike the original OpenAI code). Its pipeline, ported here step by step:
//! 1. added tokens: special tokens whose `normalized` flag is false (a plain-string pad token such
//!    as the published `"!"`) are cut out of the raw text first and get their own id, so "hi!"
//!    ends in the id of `!` (0), not of `!</w>` (256);
//! 2. normalisation of the remaining pieces: NFC, every run of Unicode whitespace to one space,
//!    per-character lower-casing (no final-sigma rule);
//! 3. normalised added tokens (the published `<|startoftext|>` / `<|endoftext|>`) are cut out of the
//!    normalised text;
//! 4. pre-tokenisation with CLIP's regex (whitespace dropped), then the GPT-2 byte-level regex and
//!    byte-to-unicode mapping;
//! 5. BPE with the `</w>` end-of-word suffix;
//! 6. BOS + ids + EOS, the ids truncated so that EOS stays last, padded with the pad token's id.
//!
//! Nothing here panics on any input text.

mod bpe;
mod files;

use crate::{Error, Result};
use bpe::Bpe;
use files::{TokenSpec, TokenizerFiles};
use regex::Regex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use unicode_normalization_alignments::UnicodeNormalization;

pub use files::DEFAULT_MAX_LENGTH;

/// CLIP's pre-tokenizer pattern, as transformers' CLIPTokenizer sets it; the text between matches
/// (whitespace) is dropped.
static CLIP_SPLIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    )
    .expect("valid regex")
});

/// The byte-level pre-tokenizer's GPT-2 pattern, applied to each CLIP piece. CLIP pieces hold no
/// whitespace, so its `" ?"` prefixes and whitespace alternatives (one needs a look-ahead the
/// `regex` crate lacks) never match and are left out. It only changes anything for a literal
/// `<|endoftext|>` that was not taken as an added token: it becomes `<|`, `endoftext`, `|>`.
static BYTE_LEVEL_SPLIT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+").expect("valid regex")
});

/// The normaliser's whitespace pattern (Oniguruma's `\s` is Unicode White_Space, as here).
static WHITESPACE_RUN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("valid regex"));

static STARTS_WITH_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\w").expect("valid"));
static ENDS_WITH_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\w$").expect("valid"));

/// GPT-2's reversible byte-to-character table: printable Latin-1 bytes map to themselves, the
/// other bytes to U+0100 onwards, so every byte string is a string of visible characters.
pub fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            next += 1;
            next - 1
        };
        table[usize::from(b)] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// An added token ready for matching: its id and the string searched for (the normalised
/// content for normalised tokens).
struct AddedToken {
    pattern: String,
    id: u32,
    spec: TokenSpec,
}

/// A piece of the input: text still to tokenize, or an added token already resolved.
enum Piece {
    Text(String),
    Token(u32),
}

/// CLIP's BPE tokenizer. Load it with [`ClipTokenizer::from_dir`].
pub struct ClipTokenizer {
    bpe: Bpe,
    raw_tokens: Vec<AddedToken>,
    normalized_tokens: Vec<AddedToken>,
    bytes: [char; 256],
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
    vocab_path: PathBuf,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.bpe.vocab.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish()
    }
}

/// NFC, whitespace runs to one space, per-character lower-casing.
///
/// NFC comes from `unicode-normalization-alignments`, the crate (and so the Unicode 9 tables)
/// `tokenizers` uses: the current `unicode-normalization` reorders combining marks added to
/// Unicode since (e.g. U+1AC3 after U+0301), which changes ids. `tokenizers`' `Lowercase` maps
/// each character on its own, so a final capital sigma becomes σ, not ς as `str::to_lowercase`
/// would give.
fn normalize(text: &str) -> String {
    let nfc: String = text.nfc().map(|(c, _)| c).collect();
    let spaced = WHITESPACE_RUN.replace_all(&nfc, " ");
    spaced.chars().flat_map(char::to_lowercase).collect()
}

/// Cuts the added tokens out of `text`: leftmost match first, the longest at one position,
/// as `tokenizers`' `AddedVocabulary::find_matches` (an Aho-Corasick automaton, leftmost-longest).
fn split_added(text: &str, tokens: &[AddedToken], out: &mut Vec<Piece>) {
    if tokens.is_empty() {
        out.push(Piece::Text(text.to_string()));
        return;
    }
    let mut start_offset = 0; // end of the last emitted piece
    let mut search = 0; // where to look for the next match
    while search < text.len() {
        let Some((start, token)) = text[search..].char_indices().find_map(|(i, _)| {
            let rest = &text[search + i..];
            tokens
                .iter()
                // An empty pattern would never advance; contents are non-empty anyway.
                .filter(|t| !t.pattern.is_empty() && rest.starts_with(t.pattern.as_str()))
                .max_by_key(|t| t.pattern.len())
                .map(|t| (search + i, t))
        }) else {
            break;
        };
        let end = start + token.pattern.len();
        search = end;
        let spec = &token.spec;
        if spec.single_word {
            let start_ok = start == 0 || !ENDS_WITH_WORD.is_match(&text[..start]);
            let end_ok = end == text.len() || !STARTS_WITH_WORD.is_match(&text[end..]);
            if !start_ok || !end_ok {
                continue;
            }
        }
        let mut piece_start = start;
        let mut piece_end = end;
        if spec.lstrip {
            let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
            piece_start = trimmed.max(start_offset);
        }
        if spec.rstrip {
            piece_end = text.len() - text[end..].trim_start_matches(char::is_whitespace).len();
            search = piece_end;
        }
        if start_offset < piece_start {
            out.push(Piece::Text(text[start_offset..piece_start].to_string()));
        }
        out.push(Piece::Token(token.id));
        start_offset = piece_end;
    }
    if start_offset < text.len() {
        out.push(Piece::Text(text[start_offset..].to_string()));
    }
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` directory: `tokenizer.json` when present, else `vocab.json`
    /// and `merges.txt`; `tokenizer_config.json` and `special_tokens_map.json` when present.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let files = TokenizerFiles::read(dir.as_ref())?;
        let bpe = Bpe::new(files.vocab, &files.merges, &files.unk).map_err(|m| Error::Config {
            path: files.merges_path.display().to_string(),
            message: format!(
                "merge {} names {:?}, which is not in the vocabulary",
                m.rank + 1,
                m.token
            ),
        })?;

        // Added tokens take their vocabulary id, or new ids after the vocabulary (as tokenizers).
        let mut next_id = bpe.vocab.values().max().map_or(0, |m| m + 1);
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut raw_tokens = Vec::new();
        let mut normalized_tokens = Vec::new();
        for spec in files.added {
            let id = match bpe.vocab.get(&spec.content) {
                Some(&id) => id,
                None => {
                    next_id += 1;
                    next_id - 1
                }
            };
            ids.insert(spec.content.clone(), id);
            if spec.normalized {
                normalized_tokens.push(AddedToken {
                    pattern: normalize(&spec.content),
                    id,
                    spec,
                });
            } else {
                raw_tokens.push(AddedToken {
                    pattern: spec.content.clone(),
                    id,
                    spec,
                });
            }
        }
        let id_of = |field: &'static str, token: &str| {
            ids.get(token)
                .or_else(|| bpe.vocab.get(token))
                .copied()
                .ok_or_else(|| Error::Config {
                    path: files.vocab_path.display().to_string(),
                    message: format!("{field} {token:?} is not in the vocabulary"),
                })
        };
        let bos_id = id_of("bos_token", &files.bos)?;
        let eos_id = id_of("eos_token", &files.eos)?;
        let pad_id = id_of("pad_token", &files.pad)?;
        Ok(Self {
            raw_tokens,
            normalized_tokens,
            bytes: byte_alphabet(),
            bos_id,
            eos_id,
            pad_id,
            max_length: files.max_length,
            vocab_path: files.vocab_path,
            bpe,
        })
    }

    /// The padded length (`model_max_length`, 77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The text's ids without BOS/EOS, untruncated.
    fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut raw_split = Vec::new();
        split_added(text, &self.raw_tokens, &mut raw_split);
        let mut pieces = Vec::new();
        for piece in raw_split {
            match piece {
                // Each piece between raw added tokens is normalised on its own, as tokenizers does.
                Piece::Text(t) => split_added(&normalize(&t), &self.normalized_tokens, &mut pieces),
                token => pieces.push(token),
            }
        }
        let mut ids = Vec::new();
        let mut word = String::new();
        for piece in pieces {
            let text = match piece {
                Piece::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Piece::Text(t) => t,
            };
            for clip_piece in CLIP_SPLIT.find_iter(&text) {
                for pre_token in BYTE_LEVEL_SPLIT.find_iter(clip_piece.as_str()) {
                    word.clear();
                    word.extend(
                        pre_token
                            .as_str()
                            .bytes()
                            .map(|b| self.bytes[usize::from(b)]),
                    );
                    if !self.bpe.encode_word(&word, &mut ids) {
                        return Err(Error::Config {
                            path: self.vocab_path.display().to_string(),
                            message: format!(
                                "{:?} has a symbol missing from the vocabulary and there is no \
                                 unknown token",
                                pre_token.as_str()
                            ),
                        });
                    }
                }
            }
        }
        Ok(ids)
    }

    /// BOS + ids + EOS, truncated to [`Self::max_length`] with EOS kept last, not padded.
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<u32>> {
        let mut content = self.content_ids(text)?;
        content.truncate(self.max_length.saturating_sub(2));
        let mut ids = Vec::with_capacity(content.len() + 2);
        ids.push(self.bos_id);
        ids.extend(content);
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Exactly [`Self::max_length`] ids: [`Self::encode_unpadded`] padded with the pad token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_unpadded(text)?;
        ids.resize(self.max_length, self.pad_id);
        Ok(ids)
    }

    /// Tokens the text needs, BOS and EOS included, before truncation: a prompt fits when this
    /// is at most [`Self::max_length`] (the "n/77" counter).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.content_ids(text)?.len() + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let t = byte_alphabet();
        assert_eq!(t[usize::from(b'a')], 'a');
        assert_eq!(t[usize::from(b' ')], 'Ġ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn normalization_steps() {
        assert_eq!(normalize("A\u{301}\t\n B"), "\u{e1} b");
        // Per-character lower-casing: no final sigma.
        assert_eq!(normalize("ΣΑΣ"), "σασ");
        assert_eq!(normalize("\u{3000}x\u{a0}"), " x ");
        // Unicode 9 NFC tables, as tokenizers: U+1AC3 (Unicode 14) is not reordered.
        assert_eq!(normalize("q\u{301}\u{1ac3}"), "q\u{301}\u{1ac3}");
    }

    #[test]
    fn clip_pieces() {
        let pieces: Vec<&str> = CLIP_SPLIT
            .find_iter("it's a <|endoftext|>12 ab!!c")
            .map(|m| m.as_str())
            .collect();
        assert_eq!(
            pieces,
            ["it", "'s", "a", "<|endoftext|>", "1", "2", "ab", "!!", "c"]
        );
        let sub: Vec<&str> = BYTE_LEVEL_SPLIT
            .find_iter("<|endoftext|>")
            .map(|m| m.as_str())
            .collect();
        assert_eq!(sub, ["<|", "endoftext", "|>"]);
    }

    fn tok(pattern: &str, id: u32) -> AddedToken {
        AddedToken {
            pattern: pattern.into(),
            id,
            spec: TokenSpec {
                content: pattern.into(),
                normalized: false,
                lstrip: false,
                rstrip: false,
                single_word: false,
            },
        }
    }

    fn show(pieces: &[Piece]) -> Vec<String> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Token(id) => format!("#{id}"),
            })
            .collect()
    }

    #[test]
    fn added_tokens_leftmost_longest() {
        let tokens = [tok("!", 0), tok("!!x", 1), tok("<e>", 2)];
        let mut out = vec![];
        split_added("a!!x!b<e>é", &tokens, &mut out);
        assert_eq!(show(&out), ["a", "#1", "#0", "b", "#2", "é"]);
        out.clear();
        split_added("", &tokens, &mut out);
        assert!(out.is_empty());
    }
}
