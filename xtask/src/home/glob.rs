//! Bash pattern matching as `[[ $string == $pattern ]]` does it, for Home Manager's forced
//! paths: `[[ $targetPath == $forcedPath* ]]`, where the unquoted `$forcedPath` is a
//! pattern, so `*`, `?` and `[…]` in a forced path (or in `$HOME`) are glob characters and
//! `*` also matches `/`.
//!
//! Bash also enables extglob (`?(…)`, `*(…)`, `+(…)`, `@(…)`, `!(…)`) inside `[[ ]]`; a
//! pattern with one of those is reported as [`Match::Unsure`], and the pre-flight then
//! relies on the generation's own check script for the verdict.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    Unsure,
}

/// Whether `text` matches the bash pattern `pattern`.
pub fn matches(pattern: &str, text: &str) -> Match {
    let p: Vec<char> = pattern.chars().collect();
    if p.windows(2)
        .any(|w| matches!(w[0], '?' | '*' | '+' | '@' | '!') && w[1] == '(')
    {
        return Match::Unsure;
    }
    let t: Vec<char> = text.chars().collect();
    if match_here(&p, &t) {
        Match::Yes
    } else {
        Match::No
    }
}

/// Iterative wildcard matching with backtracking to the last `*` (linear in practice).
fn match_here(p: &[char], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    // Consecutive stars are one.
                    while pi < p.len() && p[pi] == '*' {
                        pi += 1;
                    }
                    star = Some((pi, ti));
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = bracket(p, pi, t[ti]) {
                        if ok {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        // An unclosed `[` is a literal.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A bracket expression at `p[start] == '['` against `c`: Some((matched, index after
/// `]`)), or None when it is not closed (then `[` is literal).
fn bracket(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        let ch = p[i];
        if ch == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if ch == '[' && p.get(i + 1) == Some(&':') {
            // A character class such as [:alpha:].
            let rest: String = p[i + 2..].iter().collect();
            if let Some(end) = rest.find(":]") {
                let class = &rest[..end];
                matched |= match class {
                    "alpha" => c.is_alphabetic(),
                    "digit" => c.is_ascii_digit(),
                    "alnum" => c.is_alphanumeric(),
                    "upper" => c.is_uppercase(),
                    "lower" => c.is_lowercase(),
                    "space" => c.is_whitespace(),
                    "punct" => c.is_ascii_punctuation(),
                    "xdigit" => c.is_ascii_hexdigit(),
                    _ => false,
                };
                i += 2 + end + 2;
                continue;
            }
        }
        let (lo, mut next) = if ch == '\\' && i + 1 < p.len() {
            (p[i + 1], i + 2)
        } else {
            (ch, i + 1)
        };
        if p.get(next) == Some(&'-') && p.get(next + 1).is_some_and(|&h| h != ']') {
            let hi = p[next + 1];
            matched |= lo <= c && c <= hi;
            next += 2;
        } else {
            matched |= lo == c;
        }
        i = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_glob_as_bash() {
        // `[[ $t == $forced* ]]`: a string prefix …
        assert_eq!(matches("/h/.c*", "/h/.config/x"), Match::Yes);
        assert_eq!(matches("/h/.c*", "/h/.bashrc"), Match::No);
        // … and a glob: `*` crosses `/`, `?` is one character, brackets are sets.
        assert_eq!(matches("/h/a*b*", "/h/a/x/b"), Match::Yes);
        assert_eq!(matches("/h/f?o*", "/h/foo"), Match::Yes);
        assert_eq!(matches("/h/f?o*", "/h/fo"), Match::No);
        assert_eq!(matches("/h/[ab]x*", "/h/bx"), Match::Yes);
        assert_eq!(matches("/h/[!ab]x*", "/h/bx"), Match::No);
        assert_eq!(matches("/h/[a-c]x*", "/h/cx"), Match::Yes);
        assert_eq!(matches("/h/[[:digit:]]*", "/h/7"), Match::Yes);
        // A literal `[` without its `]`, and escapes.
        assert_eq!(matches("/h/[x*", "/h/[x"), Match::Yes);
        assert_eq!(matches("/h/\\*x*", "/h/*x"), Match::Yes);
        assert_eq!(matches("/h/\\*x*", "/h/ax"), Match::No);
        // A bracket path that is not a set of itself: `[x]` matches `x`, not `[x]`.
        assert_eq!(matches("/h/[x]*", "/h/[x]"), Match::No);
        assert_eq!(matches("/h/@(a|b)*", "/h/a"), Match::Unsure);
    }
}
