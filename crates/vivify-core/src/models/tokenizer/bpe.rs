//! Byte-pair encoding of one pre-token, ported from the `tokenizers` library's BPE model
//! (`models/bpe/word.rs`, `merge_word` and `Word::merge_all`) with the options transformers'
//! `CLIPTokenizer` sets: no continuing-subword prefix, `</w>` end-of-word suffix, no dropout,
//! unknown symbols not fused.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A vocabulary and its merge table, ready to encode words.
pub(super) struct Bpe {
    pub vocab: HashMap<String, u32>,
    /// (left id, right id) -> (rank, id of the merged token).
    merges: HashMap<(u32, u32), (u32, u32)>,
    unk_id: Option<u32>,
}

/// A merge-table entry that names a token missing from the vocabulary.
pub(super) struct MissingMergeToken {
    pub rank: usize,
    pub token: String,
}

impl Bpe {
    /// Builds the merge table. Like `tokenizers`, every merge's parts and their concatenation must
    /// be in the vocabulary; the rank is the merge's position in the list.
    pub fn new(
        vocab: HashMap<String, u32>,
        merges: &[(String, String)],
        unk_token: &str,
    ) -> Result<Self, MissingMergeToken> {
        let mut table = HashMap::with_capacity(merges.len());
        for (rank, (a, b)) in merges.iter().enumerate() {
            let missing = |token: String| MissingMergeToken { rank, token };
            let a_id = *vocab.get(a).ok_or_else(|| missing(a.clone()))?;
            let b_id = *vocab.get(b).ok_or_else(|| missing(b.clone()))?;
            let joined = format!("{a}{b}");
            let new_id = *vocab.get(&joined).ok_or_else(|| missing(joined.clone()))?;
            // A repeated pair keeps its last rank, as a HashMap collect does in `tokenizers`.
            table.insert((a_id, b_id), (rank as u32, new_id));
        }
        let unk_id = vocab.get(unk_token).copied();
        Ok(Self {
            vocab,
            merges: table,
            unk_id,
        })
    }

    /// Encodes one byte-level word (already mapped to the byte alphabet), appending the ids.
    /// Returns false when a symbol is neither in the vocabulary nor replaceable by the unknown
    /// token (impossible with a byte-level vocabulary, which holds every byte symbol).
    pub fn encode_word(&self, word: &str, out: &mut Vec<u32>) -> bool {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        let mut chars = word.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            let is_last = chars.peek().is_none();
            let end = start + c.len_utf8();
            let piece = &word[start..end];
            // The end-of-word suffix marks the last symbol, so "a" inside and at the end of a
            // word are different tokens ("a" vs "a</w>").
            let id = if is_last {
                self.vocab.get(&format!("{piece}</w>"))
            } else {
                self.vocab.get(piece)
            };
            match (id, self.unk_id) {
                (Some(&id), _) => push_symbol(&mut symbols, id, piece.len()),
                // Not fused: each unknown symbol becomes its own unknown token.
                (None, Some(unk)) => push_symbol(&mut symbols, unk, piece.len()),
                (None, None) => return false,
            }
        }
        self.merge_all(&mut symbols);
        out.extend(symbols.iter().filter(|s| s.len != 0).map(|s| s.id));
        true
    }

    /// Applies merges lowest rank first (leftmost first among equal ranks), exactly as
    /// `tokenizers`' `Word::merge_all` does with its priority queue.
    fn merge_all(&self, symbols: &mut [Symbol]) {
        let mut queue: BinaryHeap<Merge> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.merges
                    .get(&(w[0].id, w[1].id))
                    .map(|&(rank, new_id)| Merge { pos, rank, new_id })
            })
            .collect();
        while let Some(top) = queue.pop() {
            // Skip symbols already merged into their left neighbour, and the last symbol.
            if symbols[top.pos].len == 0 || symbols[top.pos].next < 0 {
                continue;
            }
            let next_pos = symbols[top.pos].next as usize;
            let right = symbols[next_pos];
            // Skip queue entries made stale by an earlier merge.
            match self.merges.get(&(symbols[top.pos].id, right.id)) {
                Some(&(_, new_id)) if new_id == top.new_id => {}
                _ => continue,
            }
            let current = &mut symbols[top.pos];
            current.id = top.new_id;
            current.len += right.len;
            current.next = right.next;
            symbols[next_pos].len = 0;
            if right.next >= 0 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = top.pos as isize;
            }
            let current = symbols[top.pos];
            if current.prev >= 0 {
                let prev = current.prev as usize;
                if let Some(&(rank, new_id)) = self.merges.get(&(symbols[prev].id, current.id)) {
                    queue.push(Merge {
                        pos: prev,
                        rank,
                        new_id,
                    });
                }
            }
            if current.next >= 0 && (current.next as usize) < symbols.len() {
                let next = symbols[current.next as usize];
                if let Some(&(rank, new_id)) = self.merges.get(&(current.id, next.id)) {
                    queue.push(Merge {
                        pos: top.pos,
                        rank,
                        new_id,
                    });
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: isize,
    next: isize,
    /// Byte length; 0 marks a symbol merged away.
    len: usize,
}

fn push_symbol(symbols: &mut Vec<Symbol>, id: u32, len: usize) {
    let n = symbols.len() as isize;
    if let Some(last) = symbols.last_mut() {
        last.next = n;
    }
    symbols.push(Symbol {
        id,
        prev: n - 1,
        next: -1,
        len,
    });
}

/// A queued merge. The heap pops the lowest rank first, then the leftmost position.
#[derive(PartialEq, Eq)]
struct Merge {
    pos: usize,
    rank: u32,
    new_id: u32,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Bpe {
        let vocab: HashMap<String, u32> = [
            "a", "b", "c", "a</w>", "b</w>", "c</w>", "ab", "bc</w>", "abc</w>", "<unk>",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
        let merges = [("a", "b"), ("b", "c</w>"), ("ab", "c</w>")]
            .map(|(a, b)| (a.to_string(), b.to_string()));
        Bpe::new(vocab, &merges, "<unk>").ok().unwrap()
    }

    #[test]
    fn merges_by_rank() {
        let bpe = toy();
        let mut out = vec![];
        assert!(bpe.encode_word("abc", &mut out));
        // "a b" (rank 0) first, then "ab c</w>".
        assert_eq!(out, vec![8]);
        out.clear();
        assert!(bpe.encode_word("bc", &mut out));
        assert_eq!(out, vec![7]);
        out.clear();
        assert!(bpe.encode_word("xa", &mut out));
        assert_eq!(out, vec![9, 3]);
    }

    #[test]
    fn merge_with_unknown_token_is_reported() {
        let vocab: HashMap<String, u32> = [("a".to_string(), 0), ("b".to_string(), 1)].into();
        let merges = [("a".to_string(), "b".to_string())];
        let err = Bpe::new(vocab, &merges, "<unk>").err().unwrap();
        assert_eq!((err.rank, err.token.as_str()), (0, "ab"));
    }
}
