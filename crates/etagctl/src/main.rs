//! etagctl (in progress).
fn main() {}
