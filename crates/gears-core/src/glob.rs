//! Redis's glob matching (`stringmatchlen`): `*`, `?`, `[...]` with ranges and `^`, and `\`
//! escapes. Used by the keys readers, which scan with `RedisModule_Scan`, and by glob
//! registrations, asked on every keyspace event.
//!
//! A pattern is compiled once ([`Glob::new`]) and matches in time linear in the text's length:
//! the parts before the first and after the last `*` are compared in place, and each part
//! between two stars is found at its leftmost place with the bit-parallel Shift-And search
//! (which leaves the most room for the parts after it, so the greedy choice is right). A
//! backtracking matcher took the pattern's length times the key's: a 10 KB pattern against a
//! 100 KB key held the server for seconds on every event.

/// The bytes one position of a pattern accepts (a 256-bit set).
type ByteSet = [u64; 4];

const ANY: ByteSet = [u64::MAX; 4];

fn contains(set: &ByteSet, c: u8) -> bool {
    set[usize::from(c >> 6)] >> (c & 63) & 1 == 1
}

fn add(set: &mut ByteSet, c: u8) {
    set[usize::from(c >> 6)] |= 1 << (c & 63);
}

/// A compiled glob pattern.
#[derive(Clone, Debug)]
pub struct Glob {
    /// The positions before the first `*` (all of them without one).
    head: Vec<ByteSet>,
    /// `None`: the pattern has no `*`, so it matches texts of exactly its length.
    starred: Option<Starred>,
}

#[derive(Clone, Debug)]
struct Starred {
    /// The parts between two stars, in order (empty ones left out).
    middles: Vec<Segment>,
    /// The positions after the last `*`, matched at the text's end.
    tail: Vec<ByteSet>,
}

/// A part between two stars, with its Shift-And masks: for each byte, the bit of each
/// position that accepts it (`words` 64-bit words per byte).
#[derive(Clone, Debug)]
struct Segment {
    len: usize,
    words: usize,
    masks: Vec<u64>,
}

impl Segment {
    fn new(sets: &[ByteSet]) -> Self {
        let words = sets.len().div_ceil(64);
        let mut masks = vec![0u64; 256 * words];
        for (position, set) in sets.iter().enumerate() {
            for c in 0..=255u8 {
                if contains(set, c) {
                    masks[usize::from(c) * words + position / 64] |= 1 << (position % 64);
                }
            }
        }
        Segment {
            len: sets.len(),
            words,
            masks,
        }
    }

    /// The end of the leftmost place `text` holds this part, if any.
    fn find_end(&self, text: &[u8]) -> Option<usize> {
        let (last_word, last_bit) = ((self.len - 1) / 64, 1u64 << ((self.len - 1) % 64));
        if self.words == 1 {
            let mut state = 0u64;
            for (i, &c) in text.iter().enumerate() {
                state = ((state << 1) | 1) & self.masks[usize::from(c)];
                if state & last_bit != 0 {
                    return Some(i + 1);
                }
            }
            return None;
        }
        let mut state = vec![0u64; self.words];
        for (i, &c) in text.iter().enumerate() {
            let mask = &self.masks[usize::from(c) * self.words..][..self.words];
            let mut carry = 1u64;
            for (word, mask) in state.iter_mut().zip(mask) {
                let out = *word >> 63;
                *word = ((*word << 1) | carry) & mask;
                carry = out;
            }
            if state[last_word] & last_bit != 0 {
                return Some(i + 1);
            }
        }
        None
    }
}

/// One element of a pattern.
enum Token {
    Star,
    One(ByteSet),
}

/// The tokens of `pattern`, with `stringmatchlen`'s reading of classes and escapes. A class
/// without its `]` accepts nothing (and ends the pattern).
fn tokens(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut p = 0;
    while p < pattern.len() {
        match pattern[p] {
            b'*' => {
                tokens.push(Token::Star);
                p += 1;
            }
            b'?' => {
                tokens.push(Token::One(ANY));
                p += 1;
            }
            b'[' => match class(pattern, p) {
                Some((set, next)) => {
                    tokens.push(Token::One(set));
                    p = next;
                }
                None => {
                    tokens.push(Token::One([0; 4]));
                    break;
                }
            },
            b'\\' if p + 1 < pattern.len() => {
                tokens.push(Token::One(literal(pattern[p + 1])));
                p += 2;
            }
            c => {
                tokens.push(Token::One(literal(c)));
                p += 1;
            }
        }
    }
    tokens
}

fn literal(c: u8) -> ByteSet {
    let mut set = [0; 4];
    add(&mut set, c);
    set
}

/// The bytes the class starting at `pattern[start] == b'['` accepts and the index after it;
/// `None` when it has no `]`.
fn class(pattern: &[u8], start: usize) -> Option<(ByteSet, usize)> {
    let mut i = start + 1;
    let negate = i < pattern.len() && pattern[i] == b'^';
    if negate {
        i += 1;
    }
    let mut set = [0u64; 4];
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            add(&mut set, pattern[i + 1]);
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            for c in lo..=hi {
                add(&mut set, c);
            }
            i += 3;
        } else {
            add(&mut set, pattern[i]);
            i += 1;
        }
    }
    if i >= pattern.len() {
        return None;
    }
    if negate {
        for word in &mut set {
            *word = !*word;
        }
    }
    Some((set, i + 1))
}

impl Glob {
    pub fn new(pattern: &[u8]) -> Self {
        let mut parts: Vec<Vec<ByteSet>> = vec![Vec::new()];
        for token in tokens(pattern) {
            match token {
                Token::Star => parts.push(Vec::new()),
                Token::One(set) => parts.last_mut().expect("one part at least").push(set),
            }
        }
        let head = parts.remove(0);
        let starred = parts.pop().map(|tail| Starred {
            middles: parts
                .iter()
                .filter(|part| !part.is_empty())
                .map(|part| Segment::new(part))
                .collect(),
            tail,
        });
        Glob { head, starred }
    }

    pub fn matches(&self, text: &[u8]) -> bool {
        let fixed =
            |sets: &[ByteSet], part: &[u8]| sets.iter().zip(part).all(|(set, &c)| contains(set, c));
        let Some(starred) = &self.starred else {
            return text.len() == self.head.len() && fixed(&self.head, text);
        };
        let (head, tail) = (self.head.len(), starred.tail.len());
        if text.len() < head + tail
            || !fixed(&self.head, &text[..head])
            || !fixed(&starred.tail, &text[text.len() - tail..])
        {
            return false;
        }
        let end = text.len() - tail;
        let mut at = head;
        for middle in &starred.middles {
            match middle.find_end(&text[at..end]) {
                Some(found) => at += found,
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    /// The backtracking matcher Gears used before (the pattern's length times the text's), as
    /// the reference for the compiled one.
    fn reference_match(pattern: &[u8], text: &[u8]) -> bool {
        let (mut p, mut t) = (0usize, 0usize);
        // Backtracking point for the last `*`: (pattern index after it, text index).
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() {
                match pattern[p] {
                    b'*' => {
                        while p < pattern.len() && pattern[p] == b'*' {
                            p += 1;
                        }
                        if p == pattern.len() {
                            return true;
                        }
                        star = Some((p, t));
                        continue;
                    }
                    b'?' => {
                        p += 1;
                        t += 1;
                        continue;
                    }
                    b'[' => {
                        if let Some((matched, next)) = reference_class(pattern, p, text[t]) {
                            if matched {
                                p = next;
                                t += 1;
                                continue;
                            }
                        }
                    }
                    b'\\' if p + 1 < pattern.len() => {
                        if pattern[p + 1] == text[t] {
                            p += 2;
                            t += 1;
                            continue;
                        }
                    }
                    c => {
                        if c == text[t] {
                            p += 1;
                            t += 1;
                            continue;
                        }
                    }
                }
            }
            match star {
                Some((sp, st)) => {
                    p = sp;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            }
        }
        while p < pattern.len() && pattern[p] == b'*' {
            p += 1;
        }
        p == pattern.len()
    }

    /// Matches `c` against the class starting at `pattern[start] == b'['`; returns whether it
    /// matched and the index after the class.
    fn reference_class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
        let mut i = start + 1;
        let negate = i < pattern.len() && pattern[i] == b'^';
        if negate {
            i += 1;
        }
        let mut matched = false;
        while i < pattern.len() && pattern[i] != b']' {
            if pattern[i] == b'\\' && i + 1 < pattern.len() {
                matched |= pattern[i + 1] == c;
                i += 2;
            } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
                let (lo, hi) = (
                    pattern[i].min(pattern[i + 2]),
                    pattern[i].max(pattern[i + 2]),
                );
                matched |= (lo..=hi).contains(&c);
                i += 3;
            } else {
                matched |= pattern[i] == c;
                i += 1;
            }
        }
        if i >= pattern.len() {
            return None;
        }
        Some((matched != negate, i + 1))
    }

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p.as_bytes()).matches(t.as_bytes())
    }

    #[test]
    fn globs() {
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:1"));
        assert!(!m("user:*", "vec:1"));
        assert!(m("h?llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*:*:x", "a:b:c:x"));
        assert!(!m("abc", "abcd"));
        assert!(m("", ""));
    }

    #[test]
    fn compiled_globs_agree_with_backtracking() {
        let alphabet = b"ab*?[]^-\\";
        let texts = b"ab-^]*[\\";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..200_000 {
            let pattern: Vec<u8> = (0..next(9))
                .map(|_| alphabet[next(alphabet.len())])
                .collect();
            let text: Vec<u8> = (0..next(9)).map(|_| texts[next(texts.len())]).collect();
            assert_eq!(
                Glob::new(&pattern).matches(&text),
                reference_match(&pattern, &text),
                "pattern {:?} text {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&text)
            );
        }
    }

    #[test]
    fn long_segments_span_words() {
        let middle = "x?".repeat(70);
        let pattern = format!("a*{middle}*b");
        let text = format!("a{}{}b", "x".repeat(500), "xy".repeat(70));
        assert!(Glob::new(pattern.as_bytes()).matches(text.as_bytes()));
        let text = format!("a{}b", "xy".repeat(69));
        assert!(!Glob::new(pattern.as_bytes()).matches(text.as_bytes()));
    }

    #[test]
    fn a_long_middle_part_against_a_long_key() {
        // 10,001 positions (157 words) between two stars, against 100,000 bytes: linear here,
        // 10^9 steps for the backtracking matcher.
        let pattern = format!("L*{}b*", "a".repeat(10_000));
        let key = format!("L{}", "a".repeat(100_000));
        assert!(!Glob::new(pattern.as_bytes()).matches(key.as_bytes()));
        assert!(Glob::new(pattern.as_bytes()).matches(format!("{key}b").as_bytes()));
    }
}
