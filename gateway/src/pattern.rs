//! Descriptor values with `*` wildcards: each `*` matches zero or more characters, anywhere
//! in the value (`foo*`, `*bar`, `a*b*c`, `*`).

/// A value with at least one `*`, split at the stars once, when the config loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wildcard {
    text: String,
    /// The literal runs between the stars: `a*b*` is `["a", "b", ""]`; at least two.
    parts: Vec<String>,
    /// The sum of the parts' lengths: a value shorter than this can't match.
    fixed: usize,
}

impl Wildcard {
    /// `Some` when `text` holds a `*`.
    pub(crate) fn new(text: &str) -> Option<Self> {
        if !text.contains('*') {
            return None;
        }
        let parts: Vec<String> = text.split('*').map(str::to_owned).collect();
        let fixed = parts.iter().map(String::len).sum();
        Some(Self {
            text: text.to_owned(),
            parts,
            fixed,
        })
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `value` matches: it starts with the first part, ends with the last, and holds
    /// the middle parts in order, without overlaps, in between. Taking each middle part at its
    /// leftmost place is enough: it leaves the most room for the parts after it.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let (Some(first), Some(last)) = (self.parts.first(), self.parts.last()) else {
            return false;
        };
        if value.len() < self.fixed || !value.starts_with(first.as_str()) {
            return false;
        }
        if !value.ends_with(last.as_str()) {
            return false;
        }
        // `fixed <= len` keeps the prefix and the suffix apart, so this slice is in bounds.
        let Some(mut rest) = value.get(first.len()..value.len() - last.len()) else {
            return false;
        };
        for part in &self.parts[1..self.parts.len() - 1] {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious, slow definition: backtracking over characters.
    fn reference(pattern: &[char], value: &[char]) -> bool {
        match pattern.split_first() {
            None => value.is_empty(),
            Some(('*', rest)) => (0..=value.len()).any(|skip| reference(rest, &value[skip..])),
            Some((c, rest)) => value.first() == Some(c) && reference(rest, &value[1..]),
        }
    }

    fn matches(pattern: &str, value: &str) -> bool {
        Wildcard::new(pattern).is_some_and(|w| w.matches(value))
    }

    #[test]
    fn stars_at_the_start_middle_and_end() {
        assert!(matches("foo*", "foo"));
        assert!(matches("foo*", "foobar"));
        assert!(!matches("foo*", "fo"));
        assert!(!matches("foo*", "xfoo"));
        assert!(matches("*bar", "bar"));
        assert!(matches("*bar", "foobar"));
        assert!(!matches("*bar", "barx"));
        assert!(matches("bar*b", "barb"));
        assert!(matches("bar*b", "bar-xyz-b"));
        assert!(!matches("bar*b", "bar"));
        assert!(!matches("bar*b", "bab"));
        assert!(matches("foo*bar*baz", "foobarbaz"));
        assert!(matches("foo*bar*baz", "foo1bar2baz"));
        assert!(!matches("foo*bar*baz", "foobazbar"));
        assert!(!matches("aa*aa", "aaa"));
        assert!(matches("aa*aa", "aaaa"));
        assert!(matches("*", ""));
        assert!(matches("**", "anything"));
        assert!(matches("a*é*z", "aéz"));
        assert!(!matches("a*é*z", "aez"));
        assert!(Wildcard::new("plain").is_none());
    }

    /// Tiny deterministic generator (xorshift64*), so the test needs no dependency and
    /// fails the same way every time.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn string(&mut self, alphabet: &[char], max: u64) -> String {
            let len = self.next() % (max + 1);
            (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    #[test]
    fn agrees_with_the_reference_on_random_patterns() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let (pattern_chars, value_chars) = (['a', 'b', '*', 'é'], ['a', 'b', 'é']);
        let mut matched = 0;
        for _ in 0..20_000 {
            let mut pattern = g.string(&pattern_chars, 7);
            if !pattern.contains('*') {
                pattern.push('*');
            }
            let value = g.string(&value_chars, 9);
            let p: Vec<char> = pattern.chars().collect();
            let v: Vec<char> = value.chars().collect();
            let expected = reference(&p, &v);
            assert_eq!(
                matches(&pattern, &value),
                expected,
                "{pattern:?} vs {value:?}"
            );
            matched += usize::from(expected);
        }
        // Both outcomes are well represented, so the comparison means something.
        assert!((2_000..18_000).contains(&matched), "{matched}");
    }
}
