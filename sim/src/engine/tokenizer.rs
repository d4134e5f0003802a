//! A deterministic tokenizer approximation. Real BPE vocabularies cannot be
//! shipped here, but routing only needs token *counts* and *prefix identity* to
//! behave like a real tokenizer's:
//!
//! - a token is an optional single leading space followed by up to 4 letters,
//!   or up to 4 digits (≈ 4 characters per token, the usual figure for English
//!   with Llama-3's tokenizer);
//! - every other character (punctuation, newline, a space not followed by a
//!   word) is one token;
//! - special tokens written as `<|name|>` are one token each;
//! - the id is a hash of the token's text into Llama-3's 128,256-entry vocabulary,
//!   so equal text gives equal ids and a shared text prefix a shared token prefix.
//!
//! Generated text uses [`token_text`]: every id maps to a short word with a
//! leading space, which re-tokenizes to exactly one token.

use super::hash::{combine, mix64};

/// Vocabulary size of Llama-3 tokenizers.
pub const VOCAB_SIZE: u32 = 128_256;

const MAX_WORD_CHARS: usize = 4;

/// Splits `text` into token ids (see the module doc for the rules).
pub fn tokenize(text: &str) -> Vec<u32> {
    let mut out = Vec::with_capacity(text.len() / 3 + 1);
    for piece in pieces(text) {
        out.push(piece_id(piece));
    }
    out
}

/// Number of tokens of `text`, without building the id vector.
pub fn count_tokens(text: &str) -> usize {
    pieces(text).count()
}

fn piece_id(piece: &str) -> u32 {
    let mut h = mix64(piece.len() as u64);
    for b in piece.bytes() {
        h = combine(h, u64::from(b));
    }
    (h % u64::from(VOCAB_SIZE)) as u32
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Other,
}

fn class_of(c: char) -> Class {
    if c.is_alphabetic() {
        Class::Letter
    } else if c.is_numeric() {
        Class::Digit
    } else {
        Class::Other
    }
}

/// Iterator over the token pieces of a text.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = next_piece_len(rest);
        let (piece, tail) = rest.split_at(len);
        rest = tail;
        Some(piece)
    })
}

fn next_piece_len(s: &str) -> usize {
    if let Some(rest) = s.strip_prefix("<|") {
        if let Some(end) = rest.find("|>") {
            let name = &rest[..end];
            if !name.is_empty() && name.len() <= 64 && !name.contains(char::is_whitespace) {
                return 2 + end + 2;
            }
        }
    }
    let mut chars = s.char_indices();
    let (_, first) = chars.next().expect("non-empty");
    let mut start_class = class_of(first);
    let mut len = first.len_utf8();
    let counted_first = usize::from(start_class != Class::Other);
    if first == ' ' {
        // A space joins the word that follows it.
        match s[1..].chars().next() {
            Some(c) if class_of(c) != Class::Other => start_class = class_of(c),
            _ => return 1,
        }
    } else if start_class == Class::Other {
        return len;
    }
    for (count, (i, c)) in (counted_first..).zip(chars) {
        if class_of(c) != start_class || count == MAX_WORD_CHARS {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// Short words used for generated text; each is one token with its space.
const WORDS: [&str; 64] = [
    " the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " was", " with",
    " be", " by", " on", " not", " he", " this", " are", " or", " his", " from", " at", " but",
    " have", " an", " they", " we", " one", " all", " can", " more", " time", " when", " will",
    " some", " what", " used", " them", " so", " out", " into", " many", " than", " made", " then",
    " may", " like", " each", " most", " over", " new", " such", " even", " also", " data",
    " node", " pod", " load", " fast", " cash", " path", " rate", " step",
];

/// Text of a generated token id.
pub fn token_text(token: u32) -> &'static str {
    WORDS[(token as usize) % WORDS.len()]
}

/// Text of a sequence of generated token ids; it re-tokenizes to the same
/// number of tokens.
pub fn detokenize(tokens: &[u32]) -> String {
    let mut s = String::with_capacity(tokens.len() * 5);
    for &t in tokens {
        s.push_str(token_text(t));
    }
    s
}

/// Length in bytes of [`detokenize`]'s output, without building it.
pub fn detokenize_len(tokens: &[u32]) -> usize {
    tokens.iter().map(|&t| token_text(t).len()).sum()
}

/// A Llama-3-style chat prompt: the text the model would see for these
/// `(role, content)` messages, ending with the assistant header.
pub fn render_chat(messages: &[(String, String)]) -> String {
    let mut s = String::from("<|begin_of_text|>");
    for (role, content) in messages {
        s.push_str("<|start_header_id|>");
        s.push_str(role);
        s.push_str("<|end_header_id|>\n\n");
        s.push_str(content);
        s.push_str("<|eot_id|>");
    }
    s.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_into_four_letter_tokens_with_leading_space() {
        assert_eq!(count_tokens("hello world"), 4); // "hell" "o" " worl" "d"
        assert_eq!(count_tokens("the cat sat."), 4);
        assert_eq!(count_tokens("12345"), 2);
        assert_eq!(count_tokens("a  b"), 3); // "a" " " " b"
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("<|eot_id|>x"), 2);
        assert_eq!(count_tokens("héllo"), 2);
    }

    #[test]
    fn shared_text_prefix_gives_shared_token_prefix() {
        let a = tokenize("You are a helpful assistant. Answer: yes");
        let b = tokenize("You are a helpful assistant. Answer: no");
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert!(common >= 8, "{common}");
        assert_eq!(tokenize("same text"), tokenize("same text"));
    }

    #[test]
    fn generated_text_retokenizes_to_same_count() {
        let toks: Vec<u32> = (0..200).map(|i| i * 7919).collect();
        let text = detokenize(&toks);
        assert_eq!(count_tokens(&text), toks.len());
        assert_eq!(detokenize_len(&toks), text.len());
    }

    #[test]
    fn ids_are_in_vocabulary() {
        assert!(tokenize("some text, with 123 digits!\n")
            .iter()
            .all(|&t| t < VOCAB_SIZE));
    }
}
