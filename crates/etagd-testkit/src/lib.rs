//! Test support for etagd (in progress).
