//! Helpers of the end-to-end tests that run the real `drover` binary as child processes: one
//! temporary directory per test (HOME, the client config, data and state directories, each
//! child's output), `drover` commands against it, JSON reads, polling, and cleanup of every
//! process a test started (the children's process groups and the pods' processes the agents
//! recorded in their state directories).

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use drover_client::ClientConfig;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

pub const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// One test's world: a temporary HOME holding everything, and the child processes it started.
pub struct World {
    pub dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    /// Agents' state directories, whose recorded pod processes are killed at the end.
    state_dirs: Vec<PathBuf>,
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::tempdir().expect("temp dir"),
            children: Vec::new(),
            state_dirs: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("config")
    }

    /// A `drover` command that sees only this world (HOME, DROVER_CONFIG).
    pub fn command(&self) -> Command {
        let mut c = Command::new(DROVER);
        c.env_remove("DROVER_SERVER")
            .env_remove("DROVER_TOKEN")
            .env("DROVER_CONFIG", self.config())
            .env("HOME", self.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .env("NO_COLOR", "1");
        c
    }

    /// Starts `drover ARGS` as a child in its own process group, its output in `<name>.log`.
    pub fn spawn(&mut self, name: &str, args: &[&str]) -> u32 {
        let log = File::create(self.path().join(format!("{name}.log"))).expect("log file");
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start drover");
        let pid = child.id();
        self.children.push((name.to_string(), child));
        pid
    }

    /// Remembers an agent's state directory (its pods' processes are killed at the end).
    pub fn track_state_dir(&mut self, dir: PathBuf) {
        self.state_dirs.push(dir);
    }

    pub fn child(&mut self, name: &str) -> &mut Child {
        &mut self
            .children
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no child {name}"))
            .1
    }

    /// Sends `sig` to the child `name` (its main process only).
    pub fn signal(&mut self, name: &str, sig: Signal) {
        let pid = self.child(name).id();
        kill(Pid::from_raw(pid as i32), sig).expect("signal");
    }

    /// Waits up to `timeout` for the child to exit; its exit status.
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child(name).try_wait().expect("wait") {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The output of the child `name` so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts `drover COMMAND` (`apiserver` or `up`) as child `name` with this world's data
    /// directory, a free loopback port and its client config, then `extra`; returns once the
    /// config is written.
    pub fn spawn_server(&mut self, name: &str, command: &str, extra: &[&str]) {
        let data = self.path().join("data");
        let config = self.config();
        let mut args = vec![
            command,
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
            "--write-config",
            config.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        self.spawn(name, &args);
        self.wait_config(Duration::from_secs(60));
    }

    /// Starts a node agent `node` (simulated h100-8 devices, no cgroups, state under this world,
    /// logs on a free port, node IP 127.0.0.1), then `extra`; its pods are killed at the end.
    pub fn spawn_agent(&mut self, node: &str, extra: &[&str]) {
        let state = self.path().join(node);
        let mut args = vec![
            "agent",
            "--name",
            node,
            "--devices",
            "simulated:h100-8",
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--log-port",
            "0",
            "--node-ip",
            "127.0.0.1",
            "--no-cgroups",
        ];
        args.extend_from_slice(extra);
        self.spawn(node, &args);
        self.track_state_dir(state);
    }

    /// Waits until the API server's client config has been written.
    pub fn wait_config(&self, timeout: Duration) {
        wait_for(timeout, "the client config", || {
            let text = std::fs::read_to_string(self.config()).ok()?;
            text.contains("token").then_some(())
        });
    }

    /// Runs `drover ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .env("RUST_LOG", "error")
            .args(args)
            .output()
            .expect("run drover")
    }

    /// Runs `drover ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "drover {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `drover get ARGS -o json`, parsed; `None` when the command fails.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let o = self.run(&all);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// The items of `drover get ARGS -o json` (empty when it fails).
    pub fn items(&self, args: &[&str]) -> Vec<Value> {
        self.get_json(args)
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Kills every child process group and every pod process recorded in tracked state
    /// directories.
    pub fn cleanup(&mut self) {
        for (_, child) in &mut self.children {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        self.children.clear();
        for dir in std::mem::take(&mut self.state_dirs) {
            for pid in recorded_pod_pids(&dir) {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A minimal pod `default/NAME` (one container running `true`), for tests that only store pods.
pub fn pod(name: &str) -> drover_api::core::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "command": ["true"]}]}
    }))
    .expect("pod")
}

/// Starts `drover apiserver --data-dir DATA --write-config CONFIG ARGS...` outside any world
/// (its output inherited), and returns once it has written its client config: the child and
/// that config.
pub fn start_apiserver(data: &Path, config: &Path, args: &[&str]) -> (Child, ClientConfig) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(DROVER)
        .arg("apiserver")
        .arg("--data-dir")
        .arg(data)
        .arg("--write-config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start drover apiserver");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // "client config written to ..." is printed after the config file is in place.
    for line in lines.by_ref() {
        if line
            .expect("read stdout")
            .starts_with("client config written to")
        {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, ClientConfig::load(config).expect("client config"))
}

/// The pids (process-group leaders) of the running containers recorded under an agent's state
/// directory (`pods/*/state.json`).
pub fn recorded_pod_pids(state_dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_dir.join("pods")) else {
        return pids;
    };
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(cs) = v["containers"].as_object() {
            for c in cs.values() {
                if let Some(pid) = c["running"]["process"]["pid"].as_u64() {
                    pids.push(pid as u32);
                }
            }
        }
    }
    pids
}

/// Every live descendant of `pid` (from /proc).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let ppid: u32 = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if state != "Z" {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parents {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// Whether the process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a Job (JSON) has the condition `type_` with status True.
pub fn has_condition(job: &Value, type_: &str) -> bool {
    job["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == type_ && c["status"] == "True")
    })
}

pub fn name(v: &Value) -> String {
    v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

impl World {
    /// Like [`World::spawn`], with the child's open-file limit (soft and hard) set to `limit`
    /// first, through `sh -c 'ulimit -n'` (the suite forbids the `unsafe` of `pre_exec`).
    pub fn spawn_with_open_file_limit(&mut self, name: &str, limit: u64, args: &[&str]) -> u32 {
        let log = File::create(self.path().join(format!("{name}.log"))).expect("log file");
        let base = self.command();
        let mut cmd = Command::new("sh");
        for (k, v) in base.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(DROVER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start drover");
        let pid = child.id();
        self.children.push((name.to_string(), child));
        pid
    }
}
