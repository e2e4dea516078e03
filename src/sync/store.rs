//! The sync folders of a profile and the settings, in the journal's file.
