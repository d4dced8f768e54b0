//! nvmf-tgt: the NVMe-oF target program. The library part holds the config file format
//! ([`config`]), the wiring of a config into a running target ([`app`]) and the command line
//! ([`cli`]), so integration tests can load configs and build targets without the binary.

#![forbid(unsafe_code)]

pub mod app;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod logging;
