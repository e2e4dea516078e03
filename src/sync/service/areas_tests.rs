//! The mode a followed or shared folder falls back to when its server refuses what it sent.

use super::mode_after_refusal;
use crate::sync::folder::Mode;

fn after(mode: Mode, accepted_new: bool, refused_new: bool) -> Option<Mode> {
    mode_after_refusal(mode, accepted_new, refused_new).map(|(m, _)| m)
}

#[test]
fn a_refused_change_with_new_files_taken_is_new_files_only() {
    for mode in [Mode::Bidirectional, Mode::UploadOnly] {
        assert_eq!(
            after(mode, true, false),
            Some(Mode::NewFilesOnly),
            "{mode:?}"
        );
        let (_, why) = mode_after_refusal(mode, true, false).unwrap();
        assert!(
            why.contains("took new files") && why.contains("403"),
            "{why}"
        );
    }
}

#[test]
fn no_new_file_taken_or_one_refused_is_download_only() {
    for mode in [Mode::Bidirectional, Mode::UploadOnly] {
        // Nothing new was ever sent: as before, download-only.
        assert_eq!(
            after(mode, false, false),
            Some(Mode::DownloadOnly),
            "{mode:?}"
        );
        // A new file refused (even if another was taken earlier): download-only.
        assert_eq!(
            after(mode, false, true),
            Some(Mode::DownloadOnly),
            "{mode:?}"
        );
        assert_eq!(
            after(mode, true, true),
            Some(Mode::DownloadOnly),
            "{mode:?}"
        );
    }
}

#[test]
fn new_files_only_falls_back_only_when_a_new_file_is_refused() {
    assert_eq!(after(Mode::NewFilesOnly, true, false), None);
    assert_eq!(after(Mode::NewFilesOnly, false, false), None);
    assert_eq!(
        after(Mode::NewFilesOnly, true, true),
        Some(Mode::DownloadOnly)
    );
    assert_eq!(
        after(Mode::NewFilesOnly, false, true),
        Some(Mode::DownloadOnly)
    );
}

#[test]
fn download_only_stays() {
    for (a, r) in [(false, false), (true, false), (false, true), (true, true)] {
        assert_eq!(after(Mode::DownloadOnly, a, r), None);
    }
}
