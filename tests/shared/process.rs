//! The real `larder` binary as a child process, for the tests that need one (`tests/it`'s
//! process tests and the campaigns): a clean environment, `serve` on a free port, killed
//! (SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_larder");

/// `larder ARGS` without any `LARDER_*`, `FAILPOINTS` or `RUST_LOG` from our environment.
pub fn larder(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("LARDER_") || key == "FAILPOINTS" {
            command.env_remove(key);
        }
    }
    command
}

/// A running `larder serve`, killed when dropped.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    pub fn start(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Process {
        Process::start_logging(root, extra, env, Stdio::null())
    }

    pub fn start_logging(root: &Path, extra: &[&str], env: &[(&str, &str)], log: Stdio) -> Process {
        let mut args = vec!["serve", root.to_str().unwrap(), "--port", "0"];
        args.extend_from_slice(extra);
        let mut command = larder(&args);
        command.stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        Process::spawn(command)
    }

    /// Runs `sh -c SCRIPT` with `larder serve ROOT --port 0` as its arguments (`"$0" "$@"`),
    /// for a script that sets something up and then `exec`s them.
    #[allow(dead_code)] // this file is in three test crates; only `it` uses this
    pub fn start_through_shell(script: &str, root: &Path) -> Process {
        let mut command = Command::new("sh");
        command.args(["-c", script, BIN, "serve", root.to_str().unwrap(), "--port", "0"]);
        command.env_remove("RUST_LOG").stdin(Stdio::null()).stderr(Stdio::null());
        Process::spawn(command)
    }

    /// [`Process::start_through_shell`] without waiting for larder to listen: the shell's
    /// process, its output dropped.
    #[allow(dead_code)] // this file is in three test crates; only the campaigns use this
    pub fn launch_through_shell(script: &str, root: &Path) -> Child {
        let mut command = Command::new("sh");
        command.args(["-c", script, BIN, "serve", root.to_str().unwrap(), "--port", "0"]);
        command.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::null());
        command.stderr(Stdio::null()).spawn().unwrap()
    }

    /// Spawns `command` (a `larder serve` on port 0) and waits for its address.
    fn spawn(mut command: Command) -> Process {
        command.stdout(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .unwrap();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Process { child, addr }
    }

    /// Stops the server as an operator does (SIGTERM), and waits for it to end.
    #[allow(dead_code)] // this file is in three test crates; only `it` uses this
    pub fn stop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
