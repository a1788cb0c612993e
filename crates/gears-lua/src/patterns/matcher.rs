//! The matcher of Lua 5.4's patterns, ported from `lstrlib.c` (`match` and its helpers) so that
//! it counts its steps and checks the execution's control: C code never reaches Lua's
//! instruction hook, and a pattern that backtracks exponentially would otherwise run for hours
//! (holding the Redis lock inside an atomic block).
//!
//! Positions are indices into the subject and the pattern. C reads the terminating NUL of both
//! strings in a few places (a pattern ending after `%`, a frontier at the subject's end); here
//! a byte past the end reads as 0, which keeps every result the same and every read in bounds.

use gears_core::GearsError;

/// Lua's `LUA_MAXCAPTURES`.
pub const MAX_CAPTURES: usize = 32;
/// Lua's `MAXCCALLS`: how deep `match` may recurse before "pattern too complex".
const MAX_DEPTH: u32 = 200;
/// Steps (calls of `match`, iterations of the expansion loops) between two checks of the
/// execution's control: a few microseconds of matching.
const CHECK_EVERY: u32 = 4096;
/// Lua's `L_ESC`.
const ESC: u8 = b'%';
/// Lua's `SPECIALS`: a pattern without them is searched for as plain text by `find`.
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// A capture's length while it is open (`CAP_UNFINISHED`).
const UNFINISHED: isize = -1;
/// The length of a position capture `()` (`CAP_POSITION`).
const POSITION: isize = -2;

/// Why a match could not complete.
#[derive(Debug)]
pub enum MatchError {
    /// A `luaL_error` of the C code: its text, without the caller's position.
    Lua(String),
    /// The execution was stopped while matching.
    Stopped(GearsError),
}

type Result<T> = std::result::Result<T, MatchError>;

fn error<T>(text: impl Into<String>) -> Result<T> {
    Err(MatchError::Lua(text.into()))
}

/// The value of one capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capture {
    /// A substring of the subject.
    Text(std::ops::Range<usize>),
    /// A position capture: a 1-based position in the subject.
    Position(i64),
}

#[derive(Clone, Copy)]
struct Slot {
    init: usize,
    len: isize,
}

/// Lua's `MatchState`: one subject, one pattern (without its anchor), the captures of the
/// current attempt.
pub struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    depth: u32,
    level: usize,
    captures: [Slot; MAX_CAPTURES],
    /// Steps left before the next check of the execution's control.
    budget: u32,
}

/// Whether `find` may search for the pattern as plain text (`nospecials`).
pub fn no_specials(pattern: &[u8]) -> bool {
    !pattern.iter().any(|b| SPECIALS.contains(b))
}

/// Lua's `match_class`: whether `c` is in the class `%cl` (C locale).
fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // C's isspace also has the vertical tab, which is_ascii_whitespace lacks.
        b's' => c == b' ' || (b'\t'..=b'\r').contains(&c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_lowercase() {
        res
    } else {
        !res
    }
}

impl<'a> Matcher<'a> {
    /// A matcher of `pat` (its `^` anchor already removed, if any) over `src`.
    pub fn new(src: &'a [u8], pat: &'a [u8]) -> Self {
        Matcher {
            src,
            pat,
            depth: MAX_DEPTH,
            level: 0,
            captures: [Slot { init: 0, len: 0 }; MAX_CAPTURES],
            budget: CHECK_EVERY,
        }
    }

    pub fn subject(&self) -> &'a [u8] {
        self.src
    }

    /// Lua's `reprepstate` and `match(ms, s, p)`: where a match starting at `s` ends.
    pub fn match_at(&mut self, s: usize) -> Result<Option<usize>> {
        self.depth = MAX_DEPTH;
        self.level = 0;
        self.do_match(s, 0)
    }

    /// Counts `cost` steps; every [`CHECK_EVERY`] steps, checks the execution's control.
    #[inline]
    pub fn tick(&mut self, cost: usize) -> Result<()> {
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        if cost < self.budget {
            self.budget -= cost;
            return Ok(());
        }
        self.budget = CHECK_EVERY;
        gears_core::control::check_current_local().map_err(MatchError::Stopped)
    }

    /// Lua's `get_onecapture`: capture `i` of the match `s..e` (the whole match when the
    /// pattern has no captures and `i` is 0).
    pub fn capture(&self, i: usize, s: usize, e: usize) -> Result<Capture> {
        if i >= self.level {
            if i != 0 {
                return error(format!("invalid capture index %{}", i + 1));
            }
            return Ok(Capture::Text(s..e));
        }
        let slot = self.captures[i];
        match slot.len {
            UNFINISHED => error("unfinished capture"),
            // Positions fit: a Lua string's length fits in a lua_Integer.
            POSITION => Ok(Capture::Position(slot.init as i64 + 1)),
            len => Ok(Capture::Text(slot.init..slot.init + len.unsigned_abs())),
        }
    }

    /// The number of values `push_captures` pushes for the match `s..e` (`whole`: whether the
    /// whole match counts when the pattern has no captures, false for `find`).
    pub fn capture_count(&self, whole: bool) -> usize {
        if self.level == 0 && whole {
            1
        } else {
            self.level
        }
    }

    /// The pattern byte at `p`, 0 past the end (C reads the terminating NUL).
    #[inline]
    fn pat_at(&self, p: usize) -> u8 {
        self.pat.get(p).copied().unwrap_or(0)
    }

    /// The subject byte at `s`, 0 past the end.
    #[inline]
    fn src_at(&self, s: usize) -> u8 {
        self.src.get(s).copied().unwrap_or(0)
    }

    /// Lua's `match`, with its depth limit. `goto init` is the loop in [`Matcher::match_items`].
    fn do_match(&mut self, s: usize, p: usize) -> Result<Option<usize>> {
        if self.depth == 0 {
            return error("pattern too complex");
        }
        self.depth -= 1;
        self.tick(1)?;
        let result = self.match_items(s, p);
        self.depth += 1;
        result
    }

    fn match_items(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>> {
        while p != self.pat.len() {
            match self.match_item(s, p)? {
                Next::Done(result) => return Ok(result),
                Next::Continue(next_s, next_p) => (s, p) = (next_s, next_p),
            }
        }
        Ok(Some(s))
    }

    /// One item of `match`'s switch: either the match's outcome, or where to go on.
    fn match_item(&mut self, s: usize, p: usize) -> Result<Next> {
        match self.pat[p] {
            b'(' if self.pat_at(p + 1) == b')' => self.start_capture(s, p + 2, POSITION),
            b'(' => self.start_capture(s, p + 1, UNFINISHED),
            b')' => self.end_capture(s, p + 1),
            b'$' if p + 1 == self.pat.len() => Ok(Next::Done((s == self.src.len()).then_some(s))),
            ESC => match self.pat_at(p + 1) {
                b'b' => Ok(match self.match_balance(s, p + 2)? {
                    Some(end) => Next::Continue(end, p + 4),
                    None => Next::Done(None),
                }),
                b'f' => self.frontier(s, p + 2),
                d @ b'0'..=b'9' => Ok(match self.match_capture(s, d)? {
                    Some(end) => Next::Continue(end, p + 2),
                    None => Next::Done(None),
                }),
                _ => self.single_item(s, p),
            },
            _ => self.single_item(s, p),
        }
    }

    /// The `default` case: a single character class with its optional suffix.
    fn single_item(&mut self, s: usize, p: usize) -> Result<Next> {
        let ep = self.class_end(p)?;
        let suffix = self.pat_at(ep);
        if !self.single_match(s, p, ep) {
            return Ok(match suffix {
                // Accept the empty match.
                b'*' | b'?' | b'-' => Next::Continue(s, ep + 1),
                _ => Next::Done(None),
            });
        }
        match suffix {
            b'?' => Ok(match self.do_match(s + 1, ep + 1)? {
                Some(end) => Next::Done(Some(end)),
                None => Next::Continue(s, ep + 1),
            }),
            b'+' => self.max_expand(s + 1, p, ep).map(Next::Done),
            b'*' => self.max_expand(s, p, ep).map(Next::Done),
            b'-' => self.min_expand(s, p, ep).map(Next::Done),
            _ => Ok(Next::Continue(s + 1, ep)),
        }
    }

    /// Lua's `classEnd`: where the single character class at `p` ends.
    fn class_end(&self, p: usize) -> Result<usize> {
        let first = self.pat[p];
        let mut p = p + 1;
        match first {
            ESC if p == self.pat.len() => error("malformed pattern (ends with '%')"),
            ESC => Ok(p + 1),
            b'[' => {
                if self.pat_at(p) == b'^' {
                    p += 1;
                }
                // Look for the `]`; the first character is never the end (`[]]`).
                loop {
                    if p == self.pat.len() {
                        return error("malformed pattern (missing ']')");
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == ESC && p < self.pat.len() {
                        p += 1; // skip escapes (e.g. '%]')
                    }
                    if self.pat_at(p) == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// Lua's `matchbracketclass`: whether `c` is in the set `[...]` from `p` (its `[`) to `ec`
    /// (its `]`).
    fn match_bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.pat_at(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                return !sig;
            }
            let here = self.pat[p];
            if here == ESC {
                p += 1;
                if match_class(c, self.pat_at(p)) {
                    return sig;
                }
            } else if self.pat_at(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if here <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if here == c {
                return sig;
            }
        }
    }

    /// Lua's `singlematch`: whether the subject byte at `s` is in the class `p..ep`.
    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.pat[p] {
            b'.' => true,
            ESC => match_class(c, self.pat_at(p + 1)),
            b'[' => self.match_bracket_class(c, p, ep - 1),
            other => other == c,
        }
    }

    /// Lua's `matchbalance` (`%bxy`, `p` at `x`).
    fn match_balance(&mut self, s: usize, p: usize) -> Result<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return error("malformed pattern (missing arguments to '%b')");
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        if self.src_at(s) != open {
            return Ok(None);
        }
        let mut depth = 1usize;
        let mut at = s + 1;
        let found = loop {
            let Some(&c) = self.src.get(at) else {
                break None;
            };
            if c == close {
                depth -= 1;
                if depth == 0 {
                    break Some(at + 1);
                }
            } else if c == open {
                depth += 1;
            }
            at += 1;
        };
        // The scan is linear, but a pattern may repeat it at every position.
        self.tick((at - s) / 64)?;
        Ok(found)
    }

    /// The frontier `%f[set]` (`p` at its `[`).
    fn frontier(&mut self, s: usize, p: usize) -> Result<Next> {
        if self.pat_at(p) != b'[' {
            return error("missing '[' after '%f' in pattern");
        }
        let ep = self.class_end(p)?;
        let previous = if s == 0 { 0 } else { self.src_at(s - 1) };
        if !self.match_bracket_class(previous, p, ep - 1)
            && self.match_bracket_class(self.src_at(s), p, ep - 1)
        {
            return Ok(Next::Continue(s, ep));
        }
        Ok(Next::Done(None))
    }

    /// Lua's `max_expand`: the longest repetition of the class `p..ep` that lets the rest match.
    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>> {
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            i += 1;
        }
        self.tick(i)?;
        loop {
            if let Some(end) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(end));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    /// Lua's `min_expand`: the shortest repetition of the class `p..ep` that lets the rest match.
    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>> {
        loop {
            if let Some(end) = self.do_match(s, ep + 1)? {
                return Ok(Some(end));
            }
            if !self.single_match(s, p, ep) {
                return Ok(None);
            }
            s += 1;
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Next> {
        let level = self.level;
        if level >= MAX_CAPTURES {
            return error("too many captures");
        }
        self.captures[level] = Slot { init: s, len: what };
        self.level = level + 1;
        let result = self.do_match(s, p)?;
        if result.is_none() {
            self.level -= 1; // undo the capture
        }
        Ok(Next::Done(result))
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Next> {
        let l = self.capture_to_close()?;
        // Captures start at or before the current position.
        self.captures[l].len = isize::try_from(s - self.captures[l].init).unwrap_or(isize::MAX);
        let result = self.do_match(s, p)?;
        if result.is_none() {
            self.captures[l].len = UNFINISHED; // undo the capture
        }
        Ok(Next::Done(result))
    }

    fn capture_to_close(&self) -> Result<usize> {
        match (0..self.level)
            .rev()
            .find(|&l| self.captures[l].len == UNFINISHED)
        {
            Some(l) => Ok(l),
            None => error("invalid pattern capture"),
        }
    }

    /// Lua's `check_capture`: the capture a back-reference `%digit` names.
    fn check_capture(&self, digit: u8) -> Result<usize> {
        let l = i32::from(digit) - i32::from(b'1');
        match usize::try_from(l) {
            Ok(l) if l < self.level && self.captures[l].len != UNFINISHED => Ok(l),
            _ => error(format!("invalid capture index %{}", l + 1)),
        }
    }

    /// Lua's `match_capture`: a back-reference. One to a position capture never matches (C
    /// compares its negative length as a huge size).
    fn match_capture(&mut self, s: usize, digit: u8) -> Result<Option<usize>> {
        let slot = self.captures[self.check_capture(digit)?];
        let Ok(len) = usize::try_from(slot.len) else {
            return Ok(None);
        };
        self.tick(len / 64)?;
        let matches = self.src.len() - s >= len
            && self.src[slot.init..slot.init + len] == self.src[s..s + len];
        Ok(matches.then_some(s + len))
    }
}

/// The outcome of one pattern item: done (matched up to a position, or failed), or go on with
/// the rest of the pattern from a new position (C's `goto init`).
enum Next {
    Done(Option<usize>),
    Continue(usize, usize),
}
