//! Runs pip in a child process, off Redis's main thread: its output goes to the Redis log, line
//! by line, and a pip that prints nothing for `PythonInstallReqMaxIdleTime` is killed.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gears_core::LogLevel;

use crate::host::log_line;

/// Runs `python -m pip <args>` for the requirement `name`; an error says why (the log has
/// pip's own words).
pub(super) fn pip(python: &Path, name: &str, args: &[&str], idle: Duration) -> Result<(), String> {
    let mut child = Command::new(python)
        .args(["-m", "pip"])
        .args(args)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("pip could not start ({}): {e}", python.display()))?;
    let (lines, incoming) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(lines);
    let verb = args.first().copied().unwrap_or("pip");
    loop {
        match incoming.recv_timeout(idle) {
            Ok(line) => log_line(LogLevel::Notice, &format!("pip {verb} '{name}': {line}")),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                let message = format!(
                    "pip {verb} '{name}' printed nothing for {} ms (PythonInstallReqMaxIdleTime): \
                     stopped",
                    idle.as_millis()
                );
                log_line(LogLevel::Warning, &message);
                return Err(message);
            }
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        let message = format!("pip {verb} '{name}' failed ({status})");
        log_line(LogLevel::Warning, &message);
        Err(message)
    }
}
