//! The side effects of `setup`: writes to sysfs control files and module loads. Behind a trait
//! so tests can run the commands against a fake tree whose "kernel" moves the fake symlinks.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

/// What `setup` asks of the kernel.
pub trait Kernel {
    /// Writes `value` to a sysfs control file (driver_override, unbind, drivers_probe,
    /// nr_hugepages); the kernel acts on it before the write returns.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;

    /// Loads a kernel module; Err carries why it failed (modprobe's message).
    fn modprobe(&self, module: &str) -> Result<(), String>;
}

/// The running kernel: plain file writes and `modprobe MODULE`.
#[derive(Debug, Default)]
pub struct LiveKernel;

impl Kernel for LiveKernel {
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        fs::write(path, value)
    }

    fn modprobe(&self, module: &str) -> Result<(), String> {
        let output = Command::new("modprobe")
            .arg(module)
            .output()
            .map_err(|e| format!("cannot run modprobe: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr.trim();
        Err(if message.is_empty() {
            format!("modprobe {module} exited with {}", output.status)
        } else {
            message.to_string()
        })
    }
}
