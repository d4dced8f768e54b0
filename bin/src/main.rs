//! nvmf-tgt: see `nvmf-tgt --help`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Usage errors exit 2 with clap's message; everything else is decided by cli::run.
    nvmf_tgt::cli::run(nvmf_tgt::cli::Cli::parse())
}
