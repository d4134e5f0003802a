//! Synthetic prompt text with a target token count.
//!
//! Prompts must be real text because the prefix scorers hash characters (GIE
//! hashes 64-character blocks) while the simulated engine caches token blocks;
//! both must see the same prompt. Words come from a fixed pseudo-vocabulary, and
//! the words-per-token ratio is calibrated once against the simulator's tokenizer
//! so a target of N tokens yields about N tokens.

use crate::rng::Rng;

const SYLLABLES: [&str; 32] = [
    "ka", "lo", "mi", "ren", "tu", "sa", "ver", "no", "di", "ple", "qua", "zo", "tran", "bi", "el",
    "mon", "ga", "shi", "or", "pen", "ul", "cra", "fi", "dre", "ya", "hum", "ex", "sto", "wa",
    "jin", "ar", "pol",
];

/// Generates words and knows how many tokens a word costs on average.
pub struct TextSynth {
    vocabulary: Vec<String>,
    tokens_per_word: f64,
}

impl TextSynth {
    /// `tokenize` is the tokenizer the engine will use; it is only called here, to
    /// calibrate.
    pub fn new(tokenize: impl Fn(&str) -> usize) -> Self {
        let mut rng = Rng::new(0x7E47);
        let vocabulary: Vec<String> = (0..2048)
            .map(|_| {
                let n = 1 + rng.below(3);
                (0..n)
                    .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                    .collect()
            })
            .collect();
        let mut synth = TextSynth {
            vocabulary,
            tokens_per_word: 1.0,
        };
        let sample = synth.words(&mut Rng::new(0xCA11), 20_000);
        synth.tokens_per_word = (tokenize(&sample) as f64 / 20_000.0).max(0.05);
        synth
    }

    pub fn tokens_per_word(&self) -> f64 {
        self.tokens_per_word
    }

    /// `n` space-separated words with a sentence break every dozen or so.
    pub fn words(&self, rng: &mut Rng, n: usize) -> String {
        let mut out = String::with_capacity(n * 6);
        for i in 0..n {
            if i > 0 {
                out.push(if i % 13 == 0 { '.' } else { ' ' });
                if i % 13 == 0 {
                    out.push(' ');
                }
            }
            out.push_str(&self.vocabulary[rng.below(self.vocabulary.len())]);
        }
        out
    }

    /// Text of about `tokens` tokens.
    pub fn text_of_tokens(&self, rng: &mut Rng, tokens: u32) -> String {
        let n = ((f64::from(tokens) / self.tokens_per_word).round() as usize).max(1);
        self.words(rng, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whitespace_tokens(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn calibration_hits_the_target_roughly() {
        let synth = TextSynth::new(|s| s.len() / 4);
        let mut rng = Rng::new(5);
        let text = synth.text_of_tokens(&mut rng, 1000);
        let tokens = text.len() / 4;
        assert!((900..1100).contains(&tokens), "{tokens}");
        let synth = TextSynth::new(whitespace_tokens);
        assert!((synth.tokens_per_word() - 1.0).abs() < 1e-9);
    }
}
