//! etagd (in progress).
fn main() {}
