//! Who is reading: file managers' thumbnailers are told apart from other programs by their
//! program's name, so the vfs can keep them from downloading every file of a folder that is
//! only being looked at (see `Vfs::opened_by_thumbnailer`).

/// True when the process of thread `pid` (the id FUSE gives) runs a thumbnailer: GNOME's
/// (`gdk-pixbuf-thumbnailer`, `totem-video-thumbnailer`, `evince-thumbnailer`, … run by
/// Nautilus, Nemo and Caja, in a bubblewrap sandbox or not), `ffmpegthumbnailer`, and XFCE's
/// `tumblerd`. The name is the program's, from `/proc/PID/cmdline` (not the thread's name,
/// which any program may set). KDE's thumbnails are made by a KIO worker started for the
/// `thumbnail` protocol only (`kioslave5 …/thumbnail.so thumbnail …`, `kioworker …`): told
/// apart by that protocol among its first arguments.
pub fn is_thumbnailer(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => is_thumbnailer_program(&cmdline),
        Err(_) => false,
    }
}

/// Whether the command line `cmdline` (NUL-separated, as in /proc) runs a thumbnailer.
fn is_thumbnailer_program(cmdline: &[u8]) -> bool {
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    if name.contains("thumbnailer") || name == "tumblerd" {
        return true;
    }
    // A KIO worker (or kdeinit running one, which rewrites its command line into one string
    // such as `kdeinit5: kioslave5 …/thumbnail.so thumbnail …`) serves one protocol:
    // `thumbnail`, or its plugin `…/thumbnail.so`, among the first words.
    let mut words = cmdline
        .split(|&b| b == 0 || b == b' ')
        .filter(|w| !w.is_empty())
        .map(|w| w.rsplit(|&b| b == b'/').next().unwrap_or_default());
    let program = String::from_utf8_lossy(words.next().unwrap_or_default()).to_ascii_lowercase();
    let kio = ["kioslave", "kioworker", "kdeinit"]
        .iter()
        .any(|k| program.contains(k));
    kio && words
        .take(4)
        .any(|w| w == b"thumbnail" || w == b"thumbnail.so")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnailers_are_told_by_their_programs() {
        for c in [
            "/usr/bin/gdk-pixbuf-thumbnailer\0-s\0size\0in\0out\0",
            "totem-video-thumbnailer\0-s\0big\0",
            "/usr/bin/evince-thumbnailer\0",
            "/usr/bin/ffmpegthumbnailer\0-i\0x\0",
            "/usr/lib/x86_64-linux-gnu/libexec/kf5/kioslave5\0/usr/lib/x86_64-linux-gnu/qt5/plugins/kf5/kio/thumbnail.so\0thumbnail\0local:/run/user/1000/dolphinBwdaBc.1.kioworker.socket\0",
            "/usr/lib/x86_64-linux-gnu/libexec/kf6/kioworker\0/usr/lib/x86_64-linux-gnu/qt6/plugins/kf6/kio/thumbnail.so\0thumbnail\0local:/run/user/1000/x\0",
            "kdeinit5: kioslave5 /usr/lib/x86_64-linux-gnu/qt5/plugins/kf5/kio/thumbnail.so thumbnail local:/run/user/1000/klauncherX.1.slave-socket\0\0",
            "/usr/lib/x86_64-linux-gnu/tumbler-1/tumblerd\0",
        ] {
            assert!(is_thumbnailer_program(c.as_bytes()), "{c}");
        }
        for c in [
            "/usr/bin/cat\0thumbnailer.png\0",
            "nautilus\0--gapplication-service\0",
            "/usr/lib/x86_64-linux-gnu/libexec/kf5/kioworker\0",
            "/usr/lib/x86_64-linux-gnu/libexec/kf5/kioslave5\0/usr/lib/x86_64-linux-gnu/qt5/plugins/kf5/kio/kio_file.so\0file\0local:/run/user/1000/dolphin.socket\0",
            "/usr/bin/dolphin\0thumbnail\0",
            "python3\0thumbs.py\0",
            "",
        ] {
            assert!(!is_thumbnailer_program(c.as_bytes()), "{c}");
        }
        // This test's own process is none (whatever its thread is called), and neither is a
        // pid that does not exist.
        assert!(!is_thumbnailer(std::process::id()));
        assert!(!is_thumbnailer(0));
    }
}
