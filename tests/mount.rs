//! Real mounts: the built `cloudmount mount` on a fresh folder of each real server (Apache
//! mod_dav with Basic and with Digest auth, `rclone serve webdav`, nginx), driven with ordinary file
//! system calls and checked byte for byte through the WebDAV protocol.
//!
//! Each test mounts its own server folder with its own cache, so tests run in parallel. File
//! operations block in the kernel until the daemon answers: the tests are plain `#[test]`
//! functions, and the WebDAV client blocks on its own runtime (see `common::mount`).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::mount::*;
use common::proxy::{target_of, FaultProxy, Request};
use common::{pattern, sha256};

const MIB: usize = 1 << 20;

/// One test per (server, case).
macro_rules! mount_tests {
    ($($case:ident),* $(,)?) => {
        mount_tests!(@server apache_basic; $($case),*);
        mount_tests!(@server apache_digest; $($case),*);
        mount_tests!(@server rclone; $($case),*);
        mount_tests!(@server nginx; $($case),*);
    };
    (@server $s:ident; $($case:ident),*) => {
        mod $s {
            $(
                #[test]
                fn $case() {
                    super::cases::$case(&super::Server::$s());
                }
            )*
        }
    };
}

mount_tests!(
    tree_matches_server,
    odd_names_written_through_the_mount,
    create_reaches_server,
    append_across_block_edge,
    overwrite_in_the_middle_across_block_edge,
    truncate_shrink_and_extend,
    rename_file,
    rename_file_into_another_directory,
    rename_file_over_existing_file,
    rename_directory,
    unlink_file,
    mkdir_and_rmdir,
    remount_on_same_cache_agrees,
    server_change_visible_after_dir_cache_time,
    read_only_area_refuses_writes,
    state_xattr_follows_the_cache,
    walks_read_every_file_right_and_fetch_each_once,
);

/// Names users really have; the 255-byte ones are the Linux limit.
fn odd_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "with space.txt",
        " leading and trailing ",
        "100%.txt",
        "%20literal",
        "%",
        "hash#tag",
        "question?mark",
        "a&b+c=d",
        "it's",
        "\"double quoted\"",
        "semi;colon,comma",
        "[brackets]{braces}",
        "tilde~dollar$at@",
        "caf\u{e9} NFC",
        "cafe\u{301} NFD",
        "emoji 😀🎉",
        "中文文件名",
        "back\\slash",
        ".hidden",
        "..double-dot-prefix",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(255));
    // 127 two-byte characters + one byte = 255 bytes of UTF-8.
    v.push(format!("{}y", "é".repeat(127)));
    // 4-byte characters: 50 emoji + 20 bytes = 220 bytes.
    v.push(format!("{}{}", "😀".repeat(50), "z".repeat(20)));
    v
}

/// The sizes around the interesting edges: empty, one byte, a page, the cache block (1 MiB).
/// The cache's block size: sizes around it and around 1 MiB (the small-file limit).
const BLOCK: usize = cloudmount::vfs::BLOCK_SIZE as usize;

fn edge_sizes() -> Vec<usize> {
    vec![
        0,
        1,
        4095,
        4096,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        MIB - 1,
        MIB,
        MIB + 1,
        3 * MIB + 17,
        5 * MIB,
    ]
}

mod cases {
    use super::*;

    fn mount(dav: &Dav) -> Mounted {
        Mounted::new(&dav.url, &MountOpts::for_server(&dav.server))
    }

    /// The mounted tree (names, sizes, sha256 of the bytes read) equals the server's.
    pub fn tree_matches_server(s: &Server) {
        let dav = Dav::fresh(s, "tree");
        let big = pattern(3 * MIB + 17, 7);
        for n in edge_sizes() {
            dav.put(&format!("size-{n}"), &pattern(n, n as u8));
        }
        for (i, name) in odd_names().iter().enumerate() {
            dav.put(name, &pattern(i * 7 + 1, i as u8));
        }
        dav.mkdir("dir with #?% chars");
        dav.put("dir with #?% chars/inner 😀", b"inner");
        dav.mkdir("dir with #?% chars/empty dir");
        dav.mkdir("nested");
        dav.mkdir("nested/deeper");
        dav.put("nested/deeper/big", &big);
        let m = mount(&dav);

        // Ranged reads first, before anything is cached: across the block edge, at the end,
        // past the end.
        let f = File::open(m.path("nested/deeper/big")).unwrap();
        for (off, len) in [
            (MIB - 10, 20),
            (2 * MIB + 5, 3),
            (3 * MIB + 10, 100),
            (5, 1),
        ] {
            let mut buf = vec![0u8; len];
            let n = f.read_at(&mut buf, off as u64).unwrap();
            let want = &big[off.min(big.len())..(off + len).min(big.len())];
            assert_eq!(&buf[..n], want, "{}: pread({off}, {len})", s.name);
        }
        let mut buf = [0u8; 10];
        assert_eq!(f.read_at(&mut buf, big.len() as u64 + 10).unwrap(), 0);
        drop(f);

        let mounted = local_tree(&m.dir);
        m.settle();
        let server = dav.tree();
        // nginx lists no dot names: neither its listing nor the mount shows them.
        let listed = odd_names().iter().filter(|n| listed_name(s, n)).count();
        assert_eq!(
            server.len(),
            edge_sizes().len() + listed + 6,
            "{}: the server does not hold what the test put there",
            s.name
        );
        assert_trees_equal(s.name, &mounted, &server);
        for (i, name) in odd_names().iter().enumerate() {
            if !listed_name(s, name) {
                // Not listed, yet there. The mount knows a folder by its listing, so it does
                // not show such a file (a known limit on nginx: tests/servers/README.md).
                let data = pattern(i * 7 + 1, i as u8);
                assert_eq!(dav.get(name), data, "{}: {name:?} on the server", s.name);
                assert!(
                    !m.path(name).exists(),
                    "{}: {name:?} through the mount",
                    s.name
                );
            }
        }
    }

    /// Whether `name` shows in `s`'s listings (nginx leaves dot names out).
    fn listed_name(s: &Server, name: &str) -> bool {
        s.lists_dot_names() || !name.starts_with('.')
    }

    /// `tree` without the paths `s` does not list.
    fn as_listed(s: &Server, tree: Tree) -> Tree {
        tree.into_iter()
            .filter(|(p, _)| p.split('/').all(|seg| listed_name(s, seg)))
            .collect()
    }

    /// Files and directories with odd names created through the mount reach the server under
    /// exactly those names.
    pub fn odd_names_written_through_the_mount(s: &Server) {
        let dav = Dav::fresh(s, "oddw");
        let m = mount(&dav);
        let names = odd_names();
        for (i, name) in names.iter().enumerate() {
            fs::write(m.path(name), pattern(i * 13 + 1, i as u8))
                .unwrap_or_else(|e| panic!("{}: create {name:?}: {e}", s.name));
        }
        fs::create_dir(m.path("dir #?%&'\" 😀")).unwrap();
        fs::write(m.path("dir #?%&'\" 😀/in it"), b"x").unwrap();

        let mut want: Vec<String> = names
            .iter()
            .filter(|n| listed_name(s, n))
            .cloned()
            .collect();
        want.push("dir #?%&'\" 😀".into());
        want.sort();
        m.settle();
        assert_eq!(dav.names(""), want, "{}: names on the server", s.name);
        for (i, name) in names.iter().enumerate() {
            m.settle();
            assert_eq!(
                dav.get(name),
                pattern(i * 13 + 1, i as u8),
                "{}: content of {name:?} on the server",
                s.name
            );
        }
        m.settle();
        assert_eq!(dav.get("dir #?%&'\" 😀/in it"), b"x");
        m.settle();
        let mounted = as_listed(s, local_tree(&m.dir));
        assert_trees_equal(s.name, &mounted, &dav.tree());
    }

    /// New files, empty or several blocks long, are on the server once closed.
    pub fn create_reaches_server(s: &Server) {
        let dav = Dav::fresh(s, "create");
        let m = mount(&dav);
        let data = pattern(2 * MIB + 100, 3);
        {
            let mut f = File::create(m.path("new")).unwrap();
            // In pieces, as applications write.
            for chunk in data.chunks(100_000) {
                f.write_all(chunk).unwrap();
            }
        }
        m.settle();
        assert_eq!(dav.get("new"), data, "{}: content of a new file", s.name);
        File::create(m.path("empty")).unwrap();
        m.settle();
        let e = dav
            .stat("empty")
            .unwrap_or_else(|| panic!("{}: an empty new file is not on the server", s.name));
        assert_eq!(e.size, 0);
        fs::write(m.path("one"), b"1").unwrap();
        m.settle();
        assert_eq!(dav.get("one"), b"1");
        // The mount shows what it wrote.
        assert_eq!(read(&m.path("new")), data);
        m.settle();
        assert_trees_equal(s.name, &local_tree(&m.dir), &dav.tree());
    }

    /// O_APPEND writes, across the block edge, reach the server after close; also on a file
    /// that was never read through the mount.
    pub fn append_across_block_edge(s: &Server) {
        let dav = Dav::fresh(s, "append");
        let mut a = pattern(MIB - 3, 1);
        let mut b = pattern(10, 2);
        dav.put("a", &a);
        dav.put("b", &b);
        let m = mount(&dav);
        // `a` is read first (cached), `b` never is.
        assert_eq!(read(&m.path("a")), a);
        for (name, content) in [("a", &mut a), ("b", &mut b)] {
            let extra = pattern(MIB + 5, 9);
            {
                let mut f = OpenOptions::new().append(true).open(m.path(name)).unwrap();
                f.write_all(&extra).unwrap();
            }
            content.extend_from_slice(&extra);
            m.settle();
            assert_eq!(
                sha256(&dav.get(name)),
                sha256(content),
                "{}: {name} on the server after an append",
                s.name
            );
            assert_eq!(read(&m.path(name)), *content);
        }
    }

    /// A write in the middle of a file, across the 1 MiB block edge, changes exactly those
    /// bytes on the server.
    pub fn overwrite_in_the_middle_across_block_edge(s: &Server) {
        let dav = Dav::fresh(s, "overwrite");
        let mut a = pattern(3 * MIB, 4);
        let mut b = pattern(3 * MIB + 1, 5);
        dav.put("a", &a);
        dav.put("b", &b);
        let m = mount(&dav);
        assert_eq!(read(&m.path("a")), a);
        for (name, content) in [("a", &mut a), ("b", &mut b)] {
            let patch = pattern(300, 0xee);
            let at = MIB - 100;
            {
                let mut f = OpenOptions::new().write(true).open(m.path(name)).unwrap();
                f.seek(SeekFrom::Start(at as u64)).unwrap();
                f.write_all(&patch).unwrap();
                // And one more at the second edge, with pwrite.
                f.write_all_at(b"EDGE", (2 * MIB - 2) as u64).unwrap();
            }
            content[at..at + 300].copy_from_slice(&patch);
            content[2 * MIB - 2..2 * MIB + 2].copy_from_slice(b"EDGE");
            m.settle();
            let got = dav.get(name);
            assert_eq!(got.len(), content.len(), "{}: size of {name}", s.name);
            assert!(
                got == *content,
                "{}: {name} on the server differs after an overwrite in the middle (first \
                 difference at byte {:?})",
                s.name,
                got.iter().zip(content.iter()).position(|(x, y)| x != y)
            );
        }
    }

    /// ftruncate shrinking, truncate(2) by path extending with zeros, O_TRUNC to empty: each
    /// reaches the server.
    pub fn truncate_shrink_and_extend(s: &Server) {
        let dav = Dav::fresh(s, "truncate");
        let orig = pattern(2 * MIB + MIB / 2, 6);
        dav.put("f", &orig);
        dav.put("g", &orig);
        let m = mount(&dav);

        // Shrink on an open file, to just past the block edge.
        {
            let f = OpenOptions::new().write(true).open(m.path("f")).unwrap();
            f.set_len((MIB + 5) as u64).unwrap();
        }
        m.settle();
        assert_eq!(dav.get("f"), orig[..MIB + 5], "{}: after shrinking", s.name);
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), (MIB + 5) as u64);

        // Extend by path, with truncate(2): nothing will close it.
        let p = std::ffi::CString::new(m.path("f").to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        let r = unsafe { libc::truncate(p.as_ptr(), (3 * MIB) as libc::off_t) };
        assert_eq!(r, 0, "truncate: {}", std::io::Error::last_os_error());
        let mut want = orig[..MIB + 5].to_vec();
        want.resize(3 * MIB, 0);
        m.settle();
        assert_eq!(
            sha256(&dav.get("f")),
            sha256(&want),
            "{}: after extending with truncate(2)",
            s.name
        );
        assert_eq!(read(&m.path("f")), want);

        // Shrink to a size inside the first block, then write after it (a hole).
        {
            let f = OpenOptions::new().write(true).open(m.path("g")).unwrap();
            f.set_len(10).unwrap();
            f.write_all_at(b"end", (MIB + 1) as u64).unwrap();
        }
        let mut want = orig[..10].to_vec();
        want.resize(MIB + 1, 0);
        want.extend_from_slice(b"end");
        m.settle();
        assert_eq!(
            sha256(&dav.get("g")),
            sha256(&want),
            "{}: shrink then write past the end",
            s.name
        );

        // O_TRUNC.
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.path("g"))
            .unwrap();
        m.settle();
        assert_eq!(dav.get("g"), b"", "{}: after O_TRUNC", s.name);
        assert_eq!(fs::metadata(m.path("g")).unwrap().len(), 0);
    }

    pub fn rename_file(s: &Server) {
        let dav = Dav::fresh(s, "renfile");
        let data = pattern(MIB + 7, 1);
        dav.put("a", &data);
        let m = mount(&dav);
        fs::rename(m.path("a"), m.path("b #?")).unwrap();
        m.settle();
        assert!(
            dav.stat("a").is_none(),
            "{}: the old name is still there",
            s.name
        );
        m.settle();
        assert_eq!(
            dav.get("b #?"),
            data,
            "{}: content under the new name",
            s.name
        );
        assert_eq!(read(&m.path("b #?")), data);
        assert_eq!(
            errno_of(fs::metadata(m.path("a")), "stat the old name"),
            libc::ENOENT
        );
        // A file written through the mount, renamed right after close.
        fs::write(m.path("c"), b"fresh").unwrap();
        fs::rename(m.path("c"), m.path("d")).unwrap();
        m.settle();
        assert!(dav.stat("c").is_none());
        m.settle();
        assert_eq!(dav.get("d"), b"fresh");
        m.settle();
        assert_trees_equal(s.name, &local_tree(&m.dir), &dav.tree());
    }

    pub fn rename_file_into_another_directory(s: &Server) {
        let dav = Dav::fresh(s, "renmove");
        let data = pattern(4096, 2);
        dav.put("a", &data);
        dav.mkdir("sub");
        dav.mkdir("sub/deeper");
        let m = mount(&dav);
        fs::rename(m.path("a"), m.path("sub/deeper/a moved")).unwrap();
        m.settle();
        assert!(dav.stat("a").is_none());
        m.settle();
        assert_eq!(dav.get("sub/deeper/a moved"), data);
        // And back up, under another name.
        fs::rename(m.path("sub/deeper/a moved"), m.path("back")).unwrap();
        m.settle();
        assert!(dav.stat("sub/deeper/a moved").is_none());
        m.settle();
        assert_eq!(dav.get("back"), data);
        m.settle();
        assert_trees_equal(s.name, &local_tree(&m.dir), &dav.tree());
    }

    pub fn rename_file_over_existing_file(s: &Server) {
        let dav = Dav::fresh(s, "renover");
        let a = pattern(MIB + 1, 1);
        let c = pattern(100, 2);
        dav.put("a", &a);
        dav.put("c", &c);
        dav.mkdir("sub");
        dav.put("sub/d", b"old d");
        let m = mount(&dav);
        // The target was read (cached) before it is replaced.
        assert_eq!(read(&m.path("c")), c);
        fs::rename(m.path("a"), m.path("c")).unwrap();
        m.settle();
        assert!(
            dav.stat("a").is_none(),
            "{}: the source is still there",
            s.name
        );
        m.settle();
        assert_eq!(dav.get("c"), a, "{}: the target was not replaced", s.name);
        assert_eq!(
            read(&m.path("c")),
            a,
            "{}: the mount reads the old target",
            s.name
        );
        // Over an existing file in another directory.
        fs::rename(m.path("c"), m.path("sub/d")).unwrap();
        m.settle();
        assert_eq!(dav.get("sub/d"), a);
        m.settle();
        assert_eq!(dav.names(""), vec!["sub".to_string()]);
        m.settle();
        assert_trees_equal(s.name, &local_tree(&m.dir), &dav.tree());
    }

    pub fn rename_directory(s: &Server) {
        let dav = Dav::fresh(s, "rendir");
        dav.mkdir("d");
        dav.put("d/f1", b"one");
        dav.mkdir("d/inner");
        dav.put("d/inner/f2", &pattern(MIB + 3, 3));
        dav.mkdir("other");
        let m = mount(&dav);
        // Look inside first, so the old names are in the kernel's and the vfs's caches.
        let before = local_tree(&m.dir);
        fs::rename(m.path("d"), m.path("e")).unwrap();
        m.settle();
        assert!(
            dav.stat("d").is_none(),
            "{}: the old directory is still there",
            s.name
        );
        m.settle();
        assert_eq!(dav.get("e/f1"), b"one");
        assert_eq!(read(&m.path("e/inner/f2")), pattern(MIB + 3, 3));
        // Into another directory.
        fs::rename(m.path("e"), m.path("other/e moved")).unwrap();
        m.settle();
        assert!(dav.stat("e").is_none());
        m.settle();
        assert_eq!(dav.get("other/e moved/inner/f2"), pattern(MIB + 3, 3));
        let after = local_tree(&m.dir);
        assert_eq!(
            after.len(),
            before.len(),
            "{}: renaming changed the number of entries",
            s.name
        );
        m.settle();
        assert_trees_equal(s.name, &after, &dav.tree());
        // Over an empty directory.
        fs::create_dir(m.path("empty")).unwrap();
        fs::rename(m.path("other/e moved"), m.path("empty")).unwrap();
        m.settle();
        assert_eq!(dav.get("empty/f1"), b"one");
        // A directory cannot replace a non-empty one.
        fs::create_dir(m.path("x")).unwrap();
        fs::write(m.path("x/keep"), b"k").unwrap();
        fs::create_dir(m.path("y")).unwrap();
        let e = errno_of(
            fs::rename(m.path("y"), m.path("x")),
            "rename over non-empty",
        );
        assert!(
            e == libc::ENOTEMPTY || e == libc::EEXIST,
            "{}: rename over a non-empty directory gave errno {e}",
            s.name
        );
        m.settle();
        assert_eq!(dav.get("x/keep"), b"k");
        m.settle();
        assert_trees_equal(s.name, &local_tree(&m.dir), &dav.tree());
    }

    pub fn unlink_file(s: &Server) {
        let dav = Dav::fresh(s, "unlink");
        dav.put("a", b"a");
        dav.put("big", &pattern(2 * MIB, 1));
        let m = mount(&dav);
        assert_eq!(read(&m.path("big")), pattern(2 * MIB, 1));
        fs::remove_file(m.path("a")).unwrap();
        fs::remove_file(m.path("big")).unwrap();
        m.settle();
        assert!(
            dav.stat("a").is_none(),
            "{}: a deleted file is still there",
            s.name
        );
        m.settle();
        assert!(dav.stat("big").is_none());
        assert_eq!(
            errno_of(fs::metadata(m.path("a")), "stat a deleted file"),
            libc::ENOENT
        );
        assert_eq!(
            errno_of(fs::remove_file(m.path("a")), "unlink twice"),
            libc::ENOENT
        );
        // A file created and deleted through the mount.
        fs::write(m.path("tmp"), b"t").unwrap();
        fs::remove_file(m.path("tmp")).unwrap();
        m.settle();
        assert!(dav.stat("tmp").is_none());
        m.settle();
        assert_eq!(dav.names(""), Vec::<String>::new());
        assert_eq!(fs::read_dir(&m.dir).unwrap().count(), 0);
    }

    pub fn mkdir_and_rmdir(s: &Server) {
        let dav = Dav::fresh(s, "mkdir");
        let m = mount(&dav);
        fs::create_dir(m.path("d")).unwrap();
        fs::create_dir(m.path("d/e 😀")).unwrap();
        m.settle();
        assert!(
            dav.stat("d/e 😀").is_some_and(|e| e.is_dir()),
            "{}: mkdir did not reach the server",
            s.name
        );
        assert_eq!(
            errno_of(fs::create_dir(m.path("d")), "mkdir existing"),
            libc::EEXIST
        );
        assert_eq!(
            errno_of(fs::remove_dir(m.path("d")), "rmdir non-empty"),
            libc::ENOTEMPTY
        );
        m.settle();
        assert!(dav.stat("d/e 😀").is_some());
        fs::remove_dir(m.path("d/e 😀")).unwrap();
        m.settle();
        assert!(
            dav.stat("d/e 😀").is_none(),
            "{}: rmdir did not reach the server",
            s.name
        );
        fs::remove_dir(m.path("d")).unwrap();
        m.settle();
        assert!(dav.stat("d").is_none());
        assert_eq!(
            errno_of(fs::remove_dir(m.path("d")), "rmdir missing"),
            libc::ENOENT
        );
        // rmdir of a file, unlink of a directory.
        fs::write(m.path("f"), b"f").unwrap();
        fs::create_dir(m.path("g")).unwrap();
        assert_eq!(
            errno_of(fs::remove_dir(m.path("f")), "rmdir a file"),
            libc::ENOTDIR
        );
        let e = errno_of(fs::remove_file(m.path("g")), "unlink a directory");
        assert!(
            e == libc::EISDIR || e == libc::EPERM,
            "unlink a directory: errno {e}"
        );
        m.settle();
        assert_trees_equal(s.name, &local_tree(&m.dir), &dav.tree());
    }

    /// A second mount on the same cache directory shows the same tree, and reads what the first
    /// one cached without a GET (both mounts go through the test proxy, which counts requests).
    pub fn remount_on_same_cache_agrees(s: &Server) {
        let dav = Dav::fresh(s, "remount");
        for n in [0, 1, 4096, MIB + 1, 3 * MIB] {
            dav.put(&format!("f{n}"), &pattern(n, n as u8));
        }
        dav.mkdir("sub dir");
        dav.put("sub dir/x #1", &pattern(5000, 9));
        let cache = tempfile::tempdir().unwrap();
        let opts = MountOpts::for_server(s).cache_dir(cache.path());
        let proxy = FaultProxy::start_blocking(target_of(&dav.url));
        let url = proxy.url_for(&dav.url);

        let m = Mounted::new(&url, &opts);
        let first = local_tree(&m.dir);
        // Files written just before the unmount are uploaded and kept in the cache too.
        for i in 0..5 {
            fs::write(m.path(&format!("written {i}")), pattern(MIB + i, i as u8)).unwrap();
        }
        m.unmount();
        let server = dav.tree();
        assert_eq!(first.len() + 5, server.len());

        let before = gets(&proxy, &dav);
        assert!(
            !before.is_empty(),
            "{}: the first mount's reads were not seen by the proxy",
            s.name
        );
        let m = Mounted::new(&url, &opts);
        let second = local_tree(&m.dir);
        let after = gets(&proxy, &dav);
        assert_trees_equal(s.name, &second, &server);
        let mut refetched: Vec<&str> = after[before.len()..].iter().map(|r| r.path()).collect();
        refetched.sort();
        refetched.dedup();
        // Known bug on nginx (listings without ETags): a file uploaded by the mount is cached
        // under the ETag of its upload, and the next mount's listing may name its version by
        // size and mtime instead (whether it does depends on which listing the second mount
        // trusts first), so the cached copy is not found and the file is downloaded again.
        // Files the first mount downloaded are always found. Elsewhere nothing is fetched.
        let may_refetch: Vec<String> = if s.name == "nginx" {
            (0..5)
                .map(|i| dav.url_path(&format!("written {i}")))
                .collect()
        } else {
            vec![]
        };
        let unexpected: Vec<&str> = refetched
            .iter()
            .copied()
            .filter(|p| !may_refetch.iter().any(|w| w == p))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{}: the second mount on the same cache sent GETs for cached content {unexpected:?}:\n{:#?}",
            s.name,
            &after[before.len()..]
        );
        m.unmount();
    }

    /// A walk over a tree of small files (`find`, then every file read in order, as `cp -r`
    /// does) reads every byte right while listings and files are fetched ahead, and the server
    /// is asked for each file once.
    pub fn walks_read_every_file_right_and_fetch_each_once(s: &Server) {
        let dav = Dav::fresh(s, "walk");
        let mut want = std::collections::BTreeMap::new();
        for d in 0..4 {
            dav.mkdir(&format!("d{d}"));
            for f in 0..12 {
                let rel = format!("d{d}/f{f:02}");
                let data = pattern(100 + 1000 * f + d, (d * 12 + f) as u8);
                dav.put(&rel, &data);
                want.insert(rel, data);
            }
        }
        let proxy = FaultProxy::start_blocking(target_of(&dav.url));
        let m = Mounted::new(&proxy.url_for(&dav.url), &MountOpts::for_server(s));
        let gets_before = gets(&proxy, &dav).len();
        let mut found = 0;
        for d in 0..4 {
            let mut names: Vec<String> = fs::read_dir(m.path(&format!("d{d}")))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            for name in names {
                let rel = format!("d{d}/{name}");
                assert_eq!(&read(&m.path(&rel)), &want[&rel], "{}: {rel}", s.name);
                found += 1;
            }
        }
        assert_eq!(found, want.len(), "{}", s.name);
        // Successful ones only (Digest answers 401 once when its nonce went stale, and the
        // client asks again).
        let after = gets(&proxy, &dav);
        let mut fetched: Vec<&str> = after[gets_before..]
            .iter()
            .filter(|r| r.succeeded())
            .map(|r| r.path())
            .collect();
        fetched.sort();
        let n = fetched.len();
        fetched.dedup();
        assert_eq!(
            n,
            want.len(),
            "{}: one GET per file:\n{:#?}",
            s.name,
            &after[gets_before..]
        );
        assert_eq!(fetched.len(), n, "{}: a file was fetched twice", s.name);
    }

    /// The GETs of `dav`'s folder that went through `proxy`, once the mount has been quiet for
    /// a moment (reading ahead finishes after the reads that caused it).
    fn gets(proxy: &FaultProxy, dav: &Dav) -> Vec<Request> {
        proxy
            .requests_when_quiet(&dav.url_path(""), Duration::from_millis(500))
            .into_iter()
            .filter(|r| r.method == "GET")
            .collect()
    }

    /// Changes made on the server by another client show through the mount once the listing
    /// is older than --dir-cache-time (1 s here): a changed file, a new one, a deleted one.
    pub fn server_change_visible_after_dir_cache_time(s: &Server) {
        let dav = Dav::fresh(s, "ttl");
        dav.put("changes", b"version one");
        dav.put("goes away", b"bye");
        dav.mkdir("d");
        let m = mount(&dav);
        assert_eq!(read(&m.path("changes")), b"version one");
        assert_eq!(read(&m.path("goes away")), b"bye");
        assert_eq!(fs::read_dir(m.path("d")).unwrap().count(), 0);

        // Another size, so Apache's ETag (mtime + size) changes even within the same second.
        dav.put("changes", b"version two, longer");
        dav.put("new", b"new file");
        dav.put("d/inner", b"inner");
        dav.delete("goes away");

        let limit = Duration::from_secs(20);
        eventually(limit, "the changed file reads the new content", || {
            (fs::read(m.path("changes")).ok()? == b"version two, longer").then_some(())
        });
        eventually(
            limit,
            "the listing shows the new and not the deleted file",
            || {
                let mut names: Vec<String> = fs::read_dir(&m.dir)
                    .ok()?
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                (names == ["changes", "d", "new"]).then_some(())
            },
        );
        eventually(limit, "the subdirectory shows its new file", || {
            (fs::read(m.path("d/inner")).ok()? == b"inner").then_some(())
        });
        assert_eq!(
            errno_of(fs::metadata(m.path("goes away")), "stat the deleted file"),
            libc::ENOENT
        );
        assert_eq!(read(&m.path("new")), b"new file");
    }

    /// A profile with a writable and a read-only area: both are folders at the root; every
    /// write in the read-only one is EROFS and changes nothing on the server.
    pub fn read_only_area_refuses_writes(s: &Server) {
        let rw = Dav::fresh(s, "area-rw");
        let ro = Dav::fresh(s, "area-ro");
        ro.put("keep.txt", b"keep");
        ro.mkdir("keepdir");
        ro.put("keepdir/inner", b"inner");
        ro.mkdir("emptydir");
        let before = ro.tree();

        let conf = tempfile::tempdir().unwrap();
        let pw = conf.path().join("password");
        fs::write(&pw, format!("{}\n", s.password)).unwrap();
        set_mode(&pw, 0o600);
        let cfg = conf.path().join("config.toml");
        fs::write(
            &cfg,
            format!(
                "[profiles.areatest]\n\
                 user = {user:?}\n\
                 password_file = {pw:?}\n\
                 \n\
                 [[profiles.areatest.areas]]\n\
                 name = \"Writable\"\n\
                 url = {rw:?}\n\
                 \n\
                 [[profiles.areatest.areas]]\n\
                 name = \"Read Only\"\n\
                 url = {ro:?}\n\
                 read_only = true\n",
                user = s.user,
                pw = pw.to_str().unwrap(),
                rw = rw.url,
                ro = ro.url,
            ),
        )
        .unwrap();
        set_mode(&cfg, 0o600);
        let mut opts = MountOpts::for_server(s).arg("--config").arg(&cfg);
        opts.user = None;
        opts.password = None;
        let m = Mounted::new("areatest", &opts);

        let mut root: Vec<(String, bool)> = fs::read_dir(&m.dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    e.file_type().unwrap().is_dir(),
                )
            })
            .collect();
        root.sort();
        assert_eq!(
            root,
            vec![
                ("Read Only".to_string(), true),
                ("Writable".to_string(), true)
            ],
            "{}: the root shows the areas as folders",
            s.name
        );

        let r = |p: &str| m.path(&format!("Read Only/{p}"));
        assert_eq!(read(&r("keep.txt")), b"keep", "reading the read-only area");
        // The area's modes have no write bits: a normal user is refused by the kernel's
        // permission check (EACCES); root passes it and gets cloudmount's EROFS (SEMANTICS.md).
        // SAFETY: geteuid has no preconditions.
        let refused = if unsafe { libc::geteuid() } == 0 {
            libc::EROFS
        } else {
            libc::EACCES
        };
        let erofs = |res: std::io::Result<()>, what: &str| {
            assert_eq!(
                errno_of(res, what),
                refused,
                "{}: {what} in the read-only area",
                s.name
            )
        };
        erofs(File::create(r("new")).map(drop), "create");
        erofs(fs::create_dir(r("newdir")), "mkdir");
        erofs(fs::remove_file(r("keep.txt")), "unlink");
        erofs(
            OpenOptions::new().write(true).open(r("keep.txt")).map(drop),
            "open an existing file for writing",
        );
        erofs(
            OpenOptions::new()
                .append(true)
                .open(r("keep.txt"))
                .map(drop),
            "open for appending",
        );
        erofs(fs::rename(r("keep.txt"), r("renamed")), "rename");
        erofs(fs::remove_dir(r("emptydir")), "rmdir");
        erofs(fs::remove_dir_all(r("keepdir")), "rm -r");
        let p = std::ffi::CString::new(r("keep.txt").to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        let t = unsafe { libc::truncate(p.as_ptr(), 0) };
        erofs(
            if t == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            },
            "truncate(2)",
        );
        assert_trees_equal(
            "the read-only area after refused writes",
            &local_tree(&m.path("Read Only")),
            &before,
        );
        assert_eq!(
            ro.tree(),
            before,
            "{}: the server's read-only area changed",
            s.name
        );

        // The writable area works.
        let w = |p: &str| m.path(&format!("Writable/{p}"));
        fs::write(w("new"), b"written").unwrap();
        fs::create_dir(w("dir")).unwrap();
        m.settle();
        assert_eq!(rw.get("new"), b"written");
        let st = m.status();
        assert!(st.errors.is_empty(), "{st:?}");
        assert!(rw.stat("dir").is_some_and(|e| e.is_dir()));
        // Moving between areas is not a rename.
        let e = errno_of(
            fs::rename(w("new"), r("new")),
            "rename into the read-only area",
        );
        assert!(
            e == refused || e == libc::EXDEV,
            "{}: rename into the read-only area gave errno {e}",
            s.name
        );
        assert_eq!(rw.get("new"), b"written");
    }

    /// `user.cloudmount.state` is `online` before reading, `partial` after one block of a
    /// multi-block file, `cached` once every block has been read (the bytes a read downloads
    /// are stored just after it returns: the state follows within moments).
    pub fn state_xattr_follows_the_cache(s: &Server) {
        let dav = Dav::fresh(s, "xattr");
        let data = pattern(5 * MIB + 3, 8);
        dav.put("f", &data);
        let m = mount(&dav);
        let p = m.path("f");
        let state = |what: &str| -> String {
            String::from_utf8(
                getxattr(&p, "user.cloudmount.state")
                    .unwrap_or_else(|e| panic!("{}: getxattr {what}: errno {e}", s.name)),
            )
            .unwrap()
        };
        let state_soon = |what: &str, want: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut now = state(what);
            while now != want && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                now = state(what);
            }
            assert_eq!(now, want, "{}: {what}", s.name);
        };
        assert_eq!(state("before reading"), "online", "{}", s.name);
        {
            let f = File::open(&p).unwrap();
            let mut buf = vec![0u8; 4096];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, data[..4096]);
        }
        state_soon("after reading one block", "partial");
        let mut all = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut all).unwrap();
        assert!(all == data);
        state_soon("after reading everything", "cached");
        assert_eq!(
            getxattr(&p, "user.other"),
            Err(libc::ENODATA),
            "{}: an attribute that does not exist",
            s.name
        );
    }

    fn set_mode(p: &std::path::Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// `df` on a mount of the embedded server shows the server's quota: total = used + available
/// and available, each within one block.
#[test]
fn df_shows_the_quota_of_the_embedded_server() {
    let server = common::embedded_server(Some("100M"));
    let s = Server::embedded(&server);
    let dav = Dav::fresh(&s, "df");
    dav.put("some data", &pattern(3 * MIB, 1));
    // The quota as the server reports it for the mounted folder.
    let folder = common::webdav(&dav.url, &s.user, &s.password);
    let q = dav.block_on(async {
        use cloudmount::remote::Remote;
        folder.quota().await.expect("quota")
    });
    let (used, avail) = (
        q.used
            .expect("the embedded server reports quota-used-bytes"),
        q.available
            .expect("the embedded server reports quota-available-bytes"),
    );
    assert!(used >= 3 * MIB as u64, "used {used} < the 3 MiB put there");
    assert_eq!(
        used + avail,
        100 * MIB as u64,
        "the server's own quota figures"
    );

    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    let st = statvfs(&m.dir);
    let frsize = st.f_frsize;
    assert!(frsize > 0);
    let total = st.f_blocks * frsize;
    let available = st.f_bavail * frsize;
    let free = st.f_bfree * frsize;
    assert!(
        total.abs_diff(used + avail) < frsize,
        "df total {total} vs quota used+available {}",
        used + avail
    );
    assert!(
        available.abs_diff(avail) < frsize,
        "df available {available} vs quota available {avail}"
    );
    assert!(
        free >= available && free.abs_diff(avail) < frsize,
        "df free {free}"
    );
    // WebDAV counts no inodes: `df -i` shows none used.
    assert!(st.f_files > 0);
    assert_eq!(st.f_ffree, st.f_files, "df -i shows inodes used");
    // And the `df` command agrees (1K blocks).
    let out = std::process::Command::new("df")
        .arg("-k")
        .arg(&m.dir)
        .output()
        .expect("run df");
    assert!(out.status.success(), "df failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    let df_total: u64 = fields[1].parse().unwrap();
    assert!(
        (df_total * 1024).abs_diff(100 * MIB as u64) < 1024 + frsize,
        "df -k shows {df_total} KiB total: {text}"
    );
}

/// `mount_info` and the unmount through `cloudmount unmount` agree with the kernel.
#[test]
fn mount_and_unmount_show_in_mountinfo() {
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "mountinfo");
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    let info = mount_info(&m.dir).expect("mounted");
    assert_eq!(info.fs_type, "fuse.cloudmount");
    // Two mounts are told apart in `mount` and `df` by what they were mounted from.
    assert_eq!(info.source, format!("cloudmount:{}", dav.url));
    let df = std::process::Command::new("df")
        .arg(&m.dir)
        .output()
        .expect("run df");
    let df = String::from_utf8_lossy(&df.stdout);
    assert!(df.contains(&info.source), "df shows the source: {df}");
    // As root, the daemon raises the kernel's read-ahead of its mount from the 128 KiB the
    // kernel allows FUSE by default to 1 MiB (sequential reads then come in 1 MiB requests).
    if unsafe { libc::geteuid() } == 0 {
        let bdi = format!("/sys/class/bdi/{}/read_ahead_kb", info.device);
        let kb = std::fs::read_to_string(&bdi).unwrap_or_else(|e| panic!("{bdi}: {e}"));
        assert_eq!(kb.trim(), "1024", "{bdi}");
    }
    let dir = m.dir.clone();
    m.unmount();
    assert!(mount_info(&dir).is_none());
}

/// `ls -l` and `getfattr` over a folder, as a file manager browses it: the mount keeps no ACLs
/// or security labels and says so (ENOTSUP, so `ls` stops asking after the first file), an
/// attribute it does not have is "No such attribute", and the state of every file is right
/// when asked folder-wide, before and after some of the files are read.
#[test]
fn ls_l_and_getfattr_over_a_folder() {
    use std::process::Command;
    let s = Server::apache_basic();
    let dav = Dav::fresh(&s, "browse");
    const FILES: usize = 40;
    dav.mkdir("dir");
    for i in 0..FILES {
        dav.put(&format!("dir/f{i:02}"), &pattern(100 + i, i as u8));
    }
    let m = Mounted::new(&dav.url, &MountOpts::for_server(&s));
    let dir = m.path("dir");

    let ls = Command::new("ls")
        .arg("-l")
        .arg(&dir)
        .output()
        .expect("run ls");
    assert!(ls.status.success(), "ls -l: {ls:?}");
    assert!(ls.stderr.is_empty(), "ls -l: {ls:?}");
    let text = String::from_utf8_lossy(&ls.stdout);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('-')).collect();
    assert_eq!(rows.len(), FILES, "{text}");
    // No `+` (ACL) or `.` (security label) after the mode bits.
    assert!(rows.iter().all(|r| r.starts_with("-rw-r--r-- ")), "{text}");

    let f = dir.join("f00");
    for name in ["security.selinux", "system.posix_acl_access"] {
        assert_eq!(getxattr(&f, name), Err(libc::ENOTSUP), "{name}");
    }
    // `trusted.` reaches the mount only for root; the kernel itself answers ENODATA to others.
    // SAFETY: geteuid has no preconditions.
    let trusted = if unsafe { libc::geteuid() } == 0 {
        libc::ENOTSUP
    } else {
        libc::ENODATA
    };
    assert_eq!(getxattr(&f, "trusted.x"), Err(trusted), "trusted.x");
    assert_eq!(getxattr(&f, "user.nosuch"), Err(libc::ENODATA));
    let out = Command::new("getfattr")
        .args(["-n", "user.nosuch"])
        .arg(&f)
        .output()
        .expect("run getfattr (Debian package attr)");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("user.nosuch: No such attribute"), "{err}");

    // The state of each file, asked for the whole folder at once.
    let states = || -> Vec<String> {
        let out = Command::new("getfattr")
            .args([
                "--absolute-names",
                "--only-values",
                "-n",
                "user.cloudmount.state",
            ])
            .args((0..FILES).map(|i| dir.join(format!("f{i:02}"))))
            .output()
            .expect("run getfattr");
        assert!(out.status.success(), "{out:?}");
        // --only-values prints the values without separators: each is one known word.
        let mut text = String::from_utf8(out.stdout).unwrap();
        let mut v = Vec::new();
        while !text.is_empty() {
            let w = ["online", "partial", "cached", "dirty", "uploading"]
                .into_iter()
                .find(|w| text.starts_with(w))
                .unwrap_or_else(|| panic!("unexpected state in {text:?}"));
            v.push(w.to_string());
            text.drain(..w.len());
        }
        v
    };
    assert_eq!(states(), vec!["online"; FILES]);
    // Some files read: they are cached, the others still online (what was remembered of
    // the folder before the reads no longer says they have nothing cached).
    let read = [3usize, 17, 31];
    for i in read {
        let p = dir.join(format!("f{i:02}"));
        assert_eq!(fs::read(&p).unwrap(), pattern(100 + i, i as u8));
    }
    let want: Vec<String> = (0..FILES)
        .map(|i| {
            if read.contains(&i) {
                "cached"
            } else {
                "online"
            }
            .to_string()
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "the read files show as cached",
        || {
            let now = states();
            // Small files read ahead beside them may be cached too; the read ones must be.
            let ok = now
                .iter()
                .zip(&want)
                .all(|(n, w)| w != "cached" || n == "cached");
            ok.then_some(())
        },
    );
    // A file written on the mount shows its upload state, then cached.
    fs::write(dir.join("f00"), b"changed here").unwrap();
    let state =
        String::from_utf8(getxattr(&dir.join("f00"), "user.cloudmount.state").unwrap()).unwrap();
    assert!(
        ["dirty", "uploading", "cached"].contains(&state.as_str()),
        "{state}"
    );
    eventually(
        Duration::from_secs(30),
        "the written file is cached",
        || (getxattr(&dir.join("f00"), "user.cloudmount.state").ok()? == b"cached").then_some(()),
    );
}
