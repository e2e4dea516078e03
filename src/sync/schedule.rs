//! When a scheduled folder runs next: daily or weekly at the settings' time, in local time; a
//! run missed while the machine was off runs at the next start.
