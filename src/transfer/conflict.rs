//! Names of conflict copies: `name (conflicted copy <device> YYYY-MM-DD HHMMSS).ext`.
//!
//! The tag goes before the last extension; a name without one (or a dot-file such as
//! `.bashrc`) gets it appended. The device name is sanitised (no `/ ? < > \ : * | "` or control
//! characters, parentheses become `_`). A name that already carries a tag is itself a conflict
//! copy: the upload queue never makes a copy of a copy (the newer version wins there). Names stay
//! within 255 bytes by shortening the stem, on a character boundary.

use std::time::SystemTime;

use crate::remote::path::NAME_MAX;

const TAG: &str = " (conflicted copy ";

/// The device name as it may appear in a file name.
pub fn sanitize_device(device: &str) -> String {
    let s: String = device
        .chars()
        .filter(|c| !c.is_control() && !"/?<>\\:*|\"".contains(*c))
        .map(|c| if c == '(' || c == ')' { '_' } else { c })
        .collect();
    let s = s.trim().to_string();
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s.chars().take(64).collect()
    }
}

/// `YYYY-MM-DD HHMMSS` in local time.
pub fn timestamp(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => 0,
    };
    let tm = crate::localtime::local_or_utc(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}{:02}{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Splits `name` into stem and extension (with its dot); dot-files and names without a dot
/// have no extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// Whether `name` is a conflict copy (its rightmost tag closes right before the extension or
/// at the end).
pub fn is_conflict_copy(name: &str) -> bool {
    let (stem, _) = split_ext(name);
    match stem.rfind(TAG) {
        Some(i) => stem[i..].ends_with(')'),
        None => false,
    }
}

/// The conflict-copy name for `name`; `n > 1` adds a counter (` #n`) for when the first
/// choice is taken.
pub fn conflict_name(name: &str, device: &str, stamp: &str, n: u32) -> String {
    let (stem, ext) = split_ext(name);
    let counter = if n > 1 {
        format!(" #{n}")
    } else {
        String::new()
    };
    let tag = format!("{TAG}{} {stamp}{counter})", sanitize_device(device));
    let room = NAME_MAX.saturating_sub(tag.len() + ext.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tag}{ext}", &stem[..cut])
}

/// This machine's name, for conflict copies.
pub fn device_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    sanitize_device(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ST: &str = "2026-11-28 101500";

    #[test]
    fn tag_goes_before_the_last_extension() {
        assert_eq!(
            conflict_name("report.final.docx", "laptop", ST, 1),
            "report.final (conflicted copy laptop 2026-11-28 101500).docx"
        );
        assert_eq!(
            conflict_name("Makefile", "laptop", ST, 1),
            "Makefile (conflicted copy laptop 2026-11-28 101500)"
        );
        assert_eq!(
            conflict_name(".bashrc", "laptop", ST, 1),
            ".bashrc (conflicted copy laptop 2026-11-28 101500)"
        );
        assert_eq!(
            conflict_name("a.txt", "laptop", ST, 3),
            "a (conflicted copy laptop 2026-11-28 101500 #3).txt"
        );
    }

    #[test]
    fn device_names_are_sanitised() {
        assert_eq!(sanitize_device("my/pc (home)?"), "mypc _home_");
        assert_eq!(sanitize_device("\u{7}"), "unknown");
        assert!(!device_name().is_empty());
    }

    #[test]
    fn conflict_copies_are_recognised() {
        let c = conflict_name("notes.txt", "pc", ST, 1);
        assert!(is_conflict_copy(&c));
        assert!(is_conflict_copy(&conflict_name("noext", "pc", ST, 2)));
        assert!(!is_conflict_copy("notes.txt"));
        assert!(!is_conflict_copy("a (conflicted copy of mine"));
    }

    #[test]
    fn long_names_stay_within_name_max() {
        let long = format!("{}.txt", "é".repeat(126));
        let c = conflict_name(&long, "pc", ST, 1);
        assert!(c.len() <= NAME_MAX, "{}", c.len());
        assert!(c.ends_with(").txt"));
        assert!(is_conflict_copy(&c));
    }

    #[test]
    fn timestamp_has_the_documented_shape() {
        let s = timestamp(SystemTime::now());
        assert_eq!(s.len(), 17);
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], " ");
        assert!(s[11..].chars().all(|c| c.is_ascii_digit()));
    }
}
