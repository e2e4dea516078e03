//! What is never synced: editors' and browsers' temporary files by default, cloudmount's own
//! files (the marker, temporaries, the account's registry folder `.cloudmount` at the root), and the patterns of the folder's ignore file (`.cloudmountignore`, gitignore syntax).
//!
//! The ignore file's syntax is gitignore's: blank lines and `#` comments are skipped; `!`
//! re-includes (the last matching line wins); a trailing `/` matches directories only; a `/` at
//! the start or in the middle anchors the pattern to the folder root, otherwise it matches a
//! name at any depth; `*` and `?` never cross a `/`; `**` matches any number of directories
//! (`**/x`, `x/**`, `a/**/b`); `[abc]`, `[a-z]`, `[!abc]` are classes; `\` escapes the next
//! character. A path inside an excluded directory is excluded, whatever later lines say.

use std::path::Path;

/// The ignore file, at the folder root. It is synced itself, like `.gitignore`.
pub const IGNORE_FILE: &str = ".cloudmountignore";

/// The folder marker cloudmount keeps at a sync folder's root.
pub const MARKER: &str = ".cloudmount-sync";

/// The prefix of cloudmount's temporary downloads (renamed over the target when complete).
pub const TMP_PREFIX: &str = ".cloudmount-tmp-";

/// Patterns excluded by default (before the ignore file's lines, so a `!` line there can
/// re-include one): editors' swap and backup files, browsers' partial downloads, desktop
/// metadata, Office owner files, atomic-save temporaries, FUSE and NFS placeholders, trash
/// directories.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "*~",
    ".~lock.*#",
    ".*.swp",
    ".*.swo",
    ".*.swx",
    "*.kate-swp",
    "*.part",
    "*.crdownload",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".Trash-*",
    "~$*",
    ".goutputstream-*",
    ".fuse_hidden*",
    ".nfs*",
];

/// The compiled exclusion rules of one folder.
#[derive(Debug, Clone)]
pub struct Excludes {
    rules: Vec<Rule>,
}

impl Excludes {
    /// The defaults plus the folder's ignore file, if any. The second value is a warning for
    /// the user when the ignore file could not be read or has lines that are not valid patterns
    /// (those lines are skipped; the rest applies).
    pub fn load(root: &Path) -> (Excludes, Option<String>) {
        let mut ex = Excludes::from_patterns(DEFAULT_EXCLUDES);
        let path = root.join(IGNORE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (ex, None),
            Err(e) => return (ex, Some(format!("{IGNORE_FILE}: cannot read it: {e}"))),
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return (ex, Some(format!("{IGNORE_FILE}: not UTF-8 text, not used")));
        };
        let mut bad: Vec<(usize, String, &'static str)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(Some(rule)) => ex.rules.push(rule),
                Ok(None) => {}
                Err(why) => bad.push((i + 1, line.to_string(), why)),
            }
        }
        let warning = bad.first().map(|(n, line, why)| {
            let more = match bad.len() {
                1 => String::new(),
                k => format!(" (and {} more bad lines)", k - 1),
            };
            format!("{IGNORE_FILE} line {n}: {why} in {line:?}, line skipped{more}")
        });
        (ex, warning)
    }

    /// Only cloudmount's own files and these patterns (ignore-file syntax, in order). Invalid
    /// patterns are skipped.
    pub fn from_patterns(patterns: &[&str]) -> Excludes {
        Excludes {
            rules: patterns
                .iter()
                .filter_map(|p| parse_line(p).ok().flatten())
                .collect(),
        }
    }

    /// Whether `rel_path` (relative to the folder root, `/`-separated, no leading slash) is
    /// excluded; `is_dir` says whether it is a directory.
    pub fn is_excluded(&self, rel_path: &str, is_dir: bool) -> bool {
        let segs: Vec<&str> = rel_path.split('/').filter(|s| !s.is_empty()).collect();
        if segs.is_empty() {
            return false;
        }
        (1..=segs.len()).any(|n| {
            let last = n == segs.len();
            self.excluded_here(&segs[..n], if last { is_dir } else { true })
        })
    }

    /// Whether the path itself (not its parents) is excluded.
    fn excluded_here(&self, segs: &[&str], is_dir: bool) -> bool {
        let name = segs[segs.len() - 1];
        if name == MARKER || name.starts_with(TMP_PREFIX) {
            return true;
        }
        // The account's registry of sync folders, at the root of the profile's URL: a folder
        // that syncs the whole account leaves it to the daemon.
        if segs.len() == 1 && name == super::registry::REGISTRY_DIR {
            return true;
        }
        let mut excluded = false;
        for rule in &self.rules {
            if (!rule.dir_only || is_dir) && rule.matches(segs) {
                excluded = !rule.negate;
            }
        }
        excluded
    }
}

/// One pattern line.
#[derive(Debug, Clone)]
struct Rule {
    negate: bool,
    dir_only: bool,
    /// Pattern segments; a name-only pattern is stored as `**/name`.
    segs: Vec<Seg>,
}

#[derive(Debug, Clone)]
enum Seg {
    /// `**`: any number of segments (at the end: one or more).
    AnyDepth,
    Glob(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    Class {
        negate: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Rule {
    fn matches(&self, path: &[&str]) -> bool {
        match_segs(&self.segs, path)
    }
}

fn match_segs(pat: &[Seg], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((Seg::AnyDepth, rest)) => {
            // A trailing `**` matches everything inside, not the directory itself.
            let min = usize::from(rest.is_empty());
            (min..=path.len()).any(|skip| match_segs(rest, &path[skip..]))
        }
        Some((Seg::Glob(toks), rest)) => match path.split_first() {
            Some((name, path_rest)) => match_glob(toks, name) && match_segs(rest, path_rest),
            None => false,
        },
    }
}

/// Matches one name against one segment's tokens (iterative, backtracking to the last `*`).
fn match_glob(toks: &[Tok], name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    let (mut t, mut c) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while c < chars.len() {
        match toks.get(t) {
            Some(Tok::Star) => {
                star = Some((t, c));
                t += 1;
                continue;
            }
            Some(tok) if tok_matches(tok, chars[c]) => {
                t += 1;
                c += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, sc)) => {
                t = st + 1;
                c = sc + 1;
                star = Some((st, sc + 1));
            }
            None => return false,
        }
    }
    toks[t..].iter().all(|k| *k == Tok::Star)
}

fn tok_matches(tok: &Tok, ch: char) -> bool {
    match tok {
        Tok::Lit(l) => *l == ch,
        Tok::One => true,
        Tok::Star => false,
        Tok::Class { negate, ranges } => {
            ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&ch)) != *negate
        }
    }
}

/// Parses one ignore-file line: `Ok(None)` for blank lines and comments, `Err(reason)` for a
/// line that is not a valid pattern.
fn parse_line(line: &str) -> Result<Option<Rule>, &'static str> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let line = trim_trailing_spaces(line);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (negate, mut pat) = match line.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let dir_only = pat.ends_with('/') && !ends_escaped(pat);
    if dir_only {
        pat = &pat[..pat.len() - 1];
    }
    let raw: Vec<&str> = split_unescaped_slash(pat);
    // A `/` at the start or in the middle anchors the pattern to the root.
    let anchored = raw.len() > 1;
    let raw: Vec<&str> = if raw.first() == Some(&"") {
        raw[1..].to_vec()
    } else {
        raw
    };
    if raw.is_empty() || raw.iter().any(|s| s.is_empty()) {
        return Err("empty path segment");
    }
    let mut segs = Vec::with_capacity(raw.len() + 1);
    if !anchored {
        segs.push(Seg::AnyDepth);
    }
    for s in raw {
        if s == "**" {
            // `a/**/**/b` is the same as `a/**/b`.
            if !matches!(segs.last(), Some(Seg::AnyDepth)) {
                segs.push(Seg::AnyDepth);
            }
        } else {
            segs.push(Seg::Glob(compile_glob(s)?));
        }
    }
    Ok(Some(Rule {
        negate,
        dir_only,
        segs,
    }))
}

/// Trailing spaces are dropped unless escaped with `\`.
fn trim_trailing_spaces(line: &str) -> &str {
    let mut end = line.len();
    while end > 0 && line.as_bytes()[end - 1] == b' ' && !ends_escaped(&line[..end]) {
        end -= 1;
    }
    &line[..end]
}

/// Whether the last character of `s` is escaped (an odd number of backslashes before it).
fn ends_escaped(s: &str) -> bool {
    let without_last = match s.char_indices().next_back() {
        Some((i, _)) => &s[..i],
        None => return false,
    };
    without_last
        .bytes()
        .rev()
        .take_while(|b| *b == b'\\')
        .count()
        % 2
        == 1
}

fn split_unescaped_slash(pat: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, b) in pat.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'/' {
            out.push(&pat[start..i]);
            start = i + 1;
        }
    }
    out.push(&pat[start..]);
    out
}

fn compile_glob(s: &str) -> Result<Vec<Tok>, &'static str> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let c = *chars.get(i + 1).ok_or("a lone \\ at the end")?;
                toks.push(Tok::Lit(c));
                i += 2;
            }
            '*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
                i += 1;
            }
            '?' => {
                toks.push(Tok::One);
                i += 1;
            }
            '[' => {
                let (tok, next) = compile_class(&chars, i)?;
                toks.push(tok);
                i = next;
            }
            c => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    Ok(toks)
}

/// Compiles the class starting at `chars[open] == '['`; returns it and the index after `]`.
fn compile_class(chars: &[char], open: usize) -> Result<(Tok, usize), &'static str> {
    let mut i = open + 1;
    let negate = matches!(chars.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = match chars.get(i) {
            None => return Err("a [ without its ]"),
            Some(']') if !first => return Ok((Tok::Class { negate, ranges }, i + 1)),
            Some('\\') => {
                i += 1;
                *chars.get(i).ok_or("a [ without its ]")?
            }
            Some(c) => *c,
        };
        first = false;
        i += 1;
        // A range `a-z` (a `-` first or last is literal).
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|n| *n != ']') {
            let hi = match chars[i + 1] {
                '\\' => *chars.get(i + 2).ok_or("a [ without its ]")?,
                h => h,
            };
            i += if chars[i + 1] == '\\' { 3 } else { 2 };
            if hi < c {
                return Err("a reversed range in [ ]");
            }
            ranges.push((c, hi));
        } else {
            ranges.push((c, c));
        }
    }
}

#[cfg(test)]
#[path = "exclude_tests.rs"]
mod tests;
