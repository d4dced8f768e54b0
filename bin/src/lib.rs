//! nvmf-tgt: the NVMe-oF target program. The library part holds the config file format
//! ([`config`]), the wiring of a config into a running target ([`app`]), the command line
//! ([`cli`]); the machine chores of `nvmf-tgt setup` are the `nvmf-setup` crate. Integration
//! tests can load configs and build targets without the binary.

#![forbid(unsafe_code)]

pub mod app;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod fabric_perf;
pub mod logging;
pub mod numa;
pub mod nvme_perf;
pub mod service;
