//! Deletes the sync makes on the local side go to the user's trash (freedesktop.org Trash
//! specification 1.0), never `unlink`.
