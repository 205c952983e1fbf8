//! `etagctl completions`: a shell completion script generated from the command definition, so it never
//! drifts from the flags.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

/// Prints the completion script for the chosen shell.
pub(crate) fn run(args: &CompletionsArgs) {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "etagctl", &mut script);
    crate::table::print(&String::from_utf8_lossy(&script));
}
