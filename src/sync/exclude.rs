//! What is never synced: editors' and browsers' temporary files by default, cloudmount's own
//! files, and the patterns of the folder's ignore file (`.cloudmountignore`, gitignore syntax).
