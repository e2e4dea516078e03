use super::*;

fn ex(patterns: &[&str]) -> Excludes {
    Excludes::from_patterns(patterns)
}

fn file(e: &Excludes, p: &str) -> bool {
    e.is_excluded(p, false)
}

fn dir(e: &Excludes, p: &str) -> bool {
    e.is_excluded(p, true)
}

#[test]
fn cloudmount_files_are_always_excluded_and_the_ignore_file_is_not() {
    let e = ex(&[]);
    assert!(file(&e, ".cloudmount-sync"));
    assert!(dir(&e, ".cloudmount-sync"));
    assert!(file(&e, ".cloudmount-tmp-abc123"));
    assert!(file(&e, "a/b/.cloudmount-tmp-x"));
    assert!(!file(&e, ".cloudmountignore"));
    assert!(!file(&e, "notes.txt"));
    // The account's registry folder, at the root only.
    assert!(dir(&e, ".cloudmount"));
    assert!(file(&e, ".cloudmount/sync-folders.json"));
    assert!(!dir(&e, "sub/.cloudmount"));
    // A negation cannot bring them back.
    let e = ex(&["!.cloudmount-tmp-*", "!.cloudmount-sync"]);
    assert!(file(&e, ".cloudmount-tmp-1"));
    assert!(file(&e, ".cloudmount-sync"));
}

#[test]
fn defaults_cover_editor_browser_and_desktop_litter() {
    let e = ex(DEFAULT_EXCLUDES);
    for p in [
        "notes.txt~",
        "a/.~lock.report.odt#",
        ".notes.txt.swp",
        "src/.main.rs.swx",
        "dl/movie.mkv.part",
        "film.crdownload",
        ".DS_Store",
        "pics/Thumbs.db",
        "desktop.ini",
        "~$report.docx",
        ".goutputstream-ABC123",
        "x/doc.kate-swp",
        ".fuse_hidden0000001",
        ".nfs000000123",
    ] {
        assert!(file(&e, p), "{p} should be excluded");
    }
    assert!(dir(&e, ".Trash-1000"));
    assert!(file(&e, ".Trash-1000/files/x"));
    for p in [
        "notes.txt",
        "data.tmp",
        ".cloudmountignore",
        "swp",
        "a.swp",
        "lock.txt",
        "part",
        "my~file",
        ".directory",
    ] {
        assert!(!file(&e, p), "{p} should not be excluded");
    }
}

#[test]
fn name_patterns_match_at_any_depth() {
    let e = ex(&["*.log", "build"]);
    assert!(file(&e, "a.log"));
    assert!(file(&e, "x/y/z.log"));
    assert!(!file(&e, "a.log.txt"));
    assert!(dir(&e, "build"));
    assert!(dir(&e, "src/build"));
    assert!(file(&e, "src/build"));
    assert!(!file(&e, "builds"));
}

#[test]
fn star_and_question_mark_do_not_cross_slashes() {
    let e = ex(&["a/*.txt", "b?c"]);
    assert!(file(&e, "a/x.txt"));
    assert!(!file(&e, "a/x/y.txt"));
    assert!(file(&e, "bxc"));
    assert!(!file(&e, "b/c"));
    assert!(!file(&e, "bc"));
    let e = ex(&["/x*y"]);
    assert!(file(&e, "xy"));
    assert!(file(&e, "x--y"));
    assert!(!file(&e, "x/y"));
}

#[test]
fn leading_and_middle_slashes_anchor_to_the_root() {
    let e = ex(&["/todo.txt", "doc/frotz"]);
    assert!(file(&e, "todo.txt"));
    assert!(!file(&e, "sub/todo.txt"));
    assert!(file(&e, "doc/frotz"));
    assert!(!file(&e, "a/doc/frotz"));
}

#[test]
fn trailing_slash_matches_directories_only() {
    let e = ex(&["cache/"]);
    assert!(dir(&e, "cache"));
    assert!(dir(&e, "a/cache"));
    assert!(!file(&e, "cache"));
    assert!(!file(&e, "a/cache"));
    // And what is inside the directory.
    assert!(file(&e, "a/cache/x.bin"));
}

#[test]
fn a_path_inside_an_excluded_directory_is_excluded() {
    let e = ex(&["node_modules", "!keep.js"]);
    assert!(dir(&e, "node_modules"));
    assert!(file(&e, "node_modules/pkg/index.js"));
    // Git's rule: a file cannot be re-included when a parent directory is excluded.
    assert!(file(&e, "node_modules/keep.js"));
    assert!(!file(&e, "src/keep.js"));
    // Excluded by the defaults (`.Trash-*`), so is everything in it.
    let e = ex(DEFAULT_EXCLUDES);
    assert!(file(&e, "a/.Trash-1000/info/x.trashinfo"));
}

#[test]
fn negation_last_match_wins() {
    let e = ex(&["*.log", "!important.log"]);
    assert!(file(&e, "a.log"));
    assert!(!file(&e, "important.log"));
    assert!(!file(&e, "x/important.log"));
    let e = ex(&["!important.log", "*.log"]);
    assert!(file(&e, "important.log"));
    // The ignore file can re-include a default.
    let mut pats = DEFAULT_EXCLUDES.to_vec();
    pats.push("!*.part");
    let e = ex(&pats);
    assert!(!file(&e, "a.part"));
    assert!(file(&e, "a~"));
}

#[test]
fn double_star_forms() {
    let e = ex(&["**/foo"]);
    assert!(file(&e, "foo"));
    assert!(file(&e, "a/b/foo"));
    assert!(!file(&e, "a/foox"));

    let e = ex(&["**/foo/bar"]);
    assert!(file(&e, "foo/bar"));
    assert!(file(&e, "x/y/foo/bar"));
    assert!(!file(&e, "foo/x/bar"));

    let e = ex(&["abc/**"]);
    assert!(file(&e, "abc/x"));
    assert!(file(&e, "abc/x/y/z"));
    // Everything inside, not the directory itself.
    assert!(!dir(&e, "abc"));
    assert!(!file(&e, "x/abc/y"));

    let e = ex(&["a/**/b"]);
    assert!(file(&e, "a/b"));
    assert!(file(&e, "a/x/b"));
    assert!(file(&e, "a/x/y/b"));
    assert!(!file(&e, "a/x/y/c"));
    assert!(!file(&e, "z/a/x/b"));

    // `**` inside a name is an ordinary star.
    let e = ex(&["a**b"]);
    assert!(file(&e, "axxb"));
    assert!(!file(&e, "ax/xb"));

    let e = ex(&["**"]);
    assert!(file(&e, "anything"));
    assert!(file(&e, "deep/er"));
}

#[test]
fn character_classes() {
    let e = ex(&["file[0-9].txt", "[!a]x", "[^b]y", "[]z]w", "q[a-c-]"]);
    assert!(file(&e, "file3.txt"));
    assert!(!file(&e, "fileA.txt"));
    assert!(!file(&e, "file10.txt"));
    assert!(file(&e, "bx"));
    assert!(!file(&e, "ax"));
    assert!(file(&e, "ay"));
    assert!(!file(&e, "by"));
    assert!(file(&e, "]w"));
    assert!(file(&e, "zw"));
    assert!(!file(&e, "aw"));
    assert!(file(&e, "qb"));
    assert!(file(&e, "q-"));
    assert!(!file(&e, "qd"));
    let e = ex(&["[abc]"]);
    assert!(file(&e, "a"));
    assert!(!file(&e, "d"));
    assert!(!file(&e, "ab"));
}

#[test]
fn escapes_comments_blank_lines_and_trailing_spaces() {
    let e = ex(&[
        "# a comment",
        "",
        "   ",
        "\\#hash",
        "\\!bang",
        "star\\*",
        "trail   ",
        "keep\\ ",
    ]);
    assert!(!file(&e, "# a comment"));
    assert!(file(&e, "#hash"));
    assert!(file(&e, "!bang"));
    assert!(file(&e, "star*"));
    assert!(!file(&e, "starx"));
    assert!(file(&e, "trail"));
    assert!(!file(&e, "trail   "));
    assert!(file(&e, "keep "));
    assert!(!file(&e, "keep"));
}

#[test]
fn non_ascii_names() {
    let e = ex(&["résumé?.pdf", "日本*"]);
    assert!(file(&e, "résumé2.pdf"));
    assert!(file(&e, "docs/日本語.txt"));
    assert!(!file(&e, "resume2.pdf"));
}

#[test]
fn invalid_lines_are_skipped() {
    let e = ex(&["bad[", "ok.txt", "also\\"]);
    assert!(file(&e, "ok.txt"));
    assert!(!file(&e, "bad["));
    assert!(parse_line("bad[").is_err());
    assert!(parse_line("x\\").is_err());
    assert!(parse_line("[z-a]").is_err());
    assert!(parse_line("a//b").is_err());
    assert!(parse_line("# c").unwrap().is_none());
}

#[test]
fn load_reads_the_ignore_file_and_warns_about_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (e, w) = Excludes::load(dir.path());
    assert!(w.is_none());
    assert!(file(&e, "a.part"), "defaults apply without an ignore file");

    std::fs::write(
        dir.path().join(IGNORE_FILE),
        "# mine\r\n*.iso\r\n/out/\nbad[\n!*.part\nworse[\n",
    )
    .unwrap();
    let (e, w) = Excludes::load(dir.path());
    let w = w.expect("a warning about the bad lines");
    assert!(w.contains("line 4"), "{w}");
    assert!(w.contains("bad["), "{w}");
    assert!(w.contains("1 more"), "{w}");
    assert!(file(&e, "x/y.iso"));
    assert!(dir_ex(&e, "out"));
    assert!(!dir_ex(&e, "a/out"));
    assert!(!file(&e, "a.part"));
    assert!(file(&e, "a~"));
    assert!(!file(&e, IGNORE_FILE));

    std::fs::write(dir.path().join(IGNORE_FILE), [0xffu8, 0xfe, b'\n']).unwrap();
    let (e, w) = Excludes::load(dir.path());
    assert!(w.unwrap().contains("UTF-8"));
    assert!(file(&e, "a.part"), "the defaults still apply");
}

fn dir_ex(e: &Excludes, p: &str) -> bool {
    e.is_excluded(p, true)
}
