//! Who is reading: file managers' thumbnailers are told apart from other programs by their
//! program's name, so the vfs can keep them from downloading every file of a folder that is
//! only being looked at (see `Vfs::opened_by_thumbnailer`).

/// True when the process of thread `pid` (the id FUSE gives) runs a thumbnailer: GNOME's
/// (`gdk-pixbuf-thumbnailer`, `totem-video-thumbnailer`, `evince-thumbnailer`, … run by
/// Nautilus, Nemo and Caja, in a bubblewrap sandbox or not), `ffmpegthumbnailer`, and XFCE's
/// `tumblerd`. The name is the program's, from `/proc/PID/cmdline` (not the thread's name,
/// which any program may set). KDE's thumbnails are made inside `kioworker` processes that do
/// everything else too: they are not told apart.
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
    name.contains("thumbnailer") || name == "tumblerd"
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
            "/usr/lib/x86_64-linux-gnu/tumbler-1/tumblerd\0",
        ] {
            assert!(is_thumbnailer_program(c.as_bytes()), "{c}");
        }
        for c in [
            "/usr/bin/cat\0thumbnailer.png\0",
            "nautilus\0--gapplication-service\0",
            "/usr/lib/x86_64-linux-gnu/libexec/kf5/kioworker\0",
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
