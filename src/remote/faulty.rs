//! Fault-injecting wrapper.
