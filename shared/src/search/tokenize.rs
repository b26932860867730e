//! Words of names, keywords, descriptions and READMEs, as the index stores and queries them.

use std::collections::BTreeSet;

/// How much of a README is read for its words: its opening says what the package is.
const README_BYTES: usize = 16 * 1024;

/// At most this many distinct words of a README are indexed (the earliest).
pub(crate) const README_TERMS: usize = 64;

/// Words too common in READMEs to tell packages apart.
const STOP_WORDS: &[&str] = &[
    "an", "and", "are", "as", "at", "be", "by", "can", "for", "from", "has", "have", "if", "in",
    "is", "it", "its", "js", "npm", "of", "on", "or", "that", "the", "this", "to", "use", "with",
    "you", "your",
];

/// The lowercase words of `text`: runs of letters and digits, one character or longer.
pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The words a package name is found by: its scope and the words of its base name
/// (`@acme/left-pad` → `acme`, `left`, `pad`).
pub(crate) fn name_words(name: &str) -> Vec<String> {
    let mut out: Vec<String> = words(name).collect();
    out.dedup();
    out
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The distinct words of a README's opening that are worth indexing, earliest first.
pub(crate) fn readme_terms(readme: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for word in words(cut(readme, README_BYTES)) {
        if out.len() == README_TERMS {
            break;
        }
        // Markdown and HTML leave single letters and numbers about; they find nothing useful.
        if word.chars().count() < 2
            || word.chars().all(|c| c.is_ascii_digit())
            || STOP_WORDS.binary_search(&word.as_str()).is_ok()
        {
            continue;
        }
        if seen.insert(word.clone()) {
            out.push(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn names_split_at_scope_and_separators() {
        assert_eq!(name_words("@acme/left-pad"), ["acme", "left", "pad"]);
        assert_eq!(name_words("Lodash.Merge_2"), ["lodash", "merge", "2"]);
    }

    #[test]
    fn readme_terms_skip_noise_and_repeats_and_stop_at_the_cap() {
        let terms = readme_terms("# The Widget\n\nA widget for widgets: `npm i widget` 123 x");
        assert_eq!(terms, ["widget", "widgets"]);
        let long = (0..200)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let terms = readme_terms(&long);
        assert_eq!(terms.len(), README_TERMS);
        assert_eq!(terms[0], "word0");
        // A multi-byte character at the cut is not split.
        let text = format!("{}é tail", "a".repeat(README_BYTES - 1));
        readme_terms(&text);
    }
}
