//! Real-PM2 test harness: a throw-away pm2 daemon of a pinned version per test.
//!
//! Include it from an integration test (tests/<name>.rs) with
//!
//! ```ignore
//! #[path = "support/pm2.rs"]
//! mod pm2;
//! use pm2::Pm2;
//!
//! let pm2 = Pm2::start("7.0.4");                 // installs pm2 7.0.4 if needed
//! let port = pm2::free_port();
//! pm2.start_app("web", "well-behaved.js", port, &[]);
//! pm2.wait_for_status("web", "online", Duration::from_secs(10)).unwrap();
//! let out = pm2.cmd(&["restart", "web"]);
//! // dropping `pm2` kills the daemon and every process of its PM2_HOME
//! ```
//!
//! Only std, libc, serde_json and tempfile are used (all already dependencies or
//! dev-dependencies of the crate).
//!
//! What it does:
//! - pm2 versions are installed from the npm registry by
//!   `tests/support/install-pm2.sh` into `<repo>/target/pm2/<VERSION>/` (flock-ed,
//!   idempotent). A missing node or npm is a panic that says which one is missing:
//!   these tests are never skipped.
//! - every daemon gets its own `HOME=/tmp/p2t-XXXXXX` and
//!   `PM2_HOME=/tmp/p2t-XXXXXX/.pm2` (short: unix socket paths are limited to 107
//!   bytes). `~/.pm2` is never touched. Every `PM2_*` and `pm_id` variable of the
//!   test's own environment is removed from what the pm2 CLI sees, so nothing
//!   points the CLI at another daemon.
//! - the daemon is started under a tiny perl child subreaper
//!   (prctl(PR_SET_CHILD_SUBREAPER)) that reaps orphans at once. Why: on the
//!   firecracker VMs this project runs on, pid 1 (`process_api`) reaps orphaned
//!   zombies only every ~2 s, and pm2 (kill(pid, 0)) counts a zombie as alive, so
//!   pm2 7.x would wait up to ~3.2 s instead of 1.6 s for a SIGKILLed orphan and may
//!   even declare "could not be stopped". With the subreaper the daemon, and
//!   anything double-forked by an app, is reparented to the reaper, as to a normal
//!   init (systemd, tini) in production. perl-base is Essential in Debian; if perl
//!   is missing the daemon is started without it and a warning is printed.
//! - `Drop` SIGKILLs the daemon (`PM2 v<x>: God Daemon (<this home>)`), so that it
//!   restarts nothing, then every process whose `/proc/<pid>/environ` holds exactly
//!   `PM2_HOME=<this home>` (this catches app servers that escaped pm2's tree by double
//!   forking), then removes the temp dir. No `pm2 kill`: a node CLI, and a stop of each
//!   app up to its kill_timeout, in every test, for a result no test looks at. It also
//!   runs when the test panics, and then prints the tail of pm2.log. Processes of other
//!   homes are never touched.
//! - `cmd()` never hangs: every CLI call has a timeout (default 30 s) after which
//!   its process group is SIGKILLed.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The pm2 versions the project tests against.
pub const VERSIONS: &[&str] = &["5.4.3", "7.0.4"];

/// Default timeout of one pm2 CLI call.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// Root of the crate (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Absolute path of `tests/apps/<name>` (`.js` is appended if `name` has none
/// and the file exists with it).
pub fn app_path(name: &str) -> PathBuf {
    let dir = repo_root().join("tests").join("apps");
    let p = dir.join(name);
    if p.exists() {
        return p;
    }
    let js = dir.join(format!("{name}.js"));
    if js.exists() {
        return js;
    }
    panic!("test app {} does not exist", p.display());
}

/// A free TCP port on 127.0.0.1 (bind port 0, read it, close). Another process may
/// take it before the app does; good enough for tests on one machine.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Is `port` on 127.0.0.1 accepting connections right now?
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Find an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Where `install-pm2.sh` puts a version: `<repo>/target/pm2/<VERSION>`, or
/// `$PM2_TRACE_PM2_ROOT/<VERSION>` when that variable is set (the script honours it too).
pub fn install_dir(version: &str) -> PathBuf {
    match std::env::var_os("PM2_TRACE_PM2_ROOT") {
        Some(root) if !root.is_empty() => PathBuf::from(root).join(version),
        _ => repo_root().join("target").join("pm2").join(version),
    }
}

/// The pm2 CLI script of `version` (a node script).
pub fn pm2_bin(version: &str) -> PathBuf {
    install_dir(version).join("node_modules/pm2/bin/pm2")
}

/// Make sure pm2 `version` is installed; install it from the npm registry if not.
/// Panics (never skips) when node or npm is missing or the install fails.
pub fn ensure_installed(version: &str) -> PathBuf {
    let node = which("node").unwrap_or_else(|| {
        panic!(
            "real-PM2 tests need Node.js: `node` was not found on PATH ({:?}). \
             Install Node.js 18+ with npm (e.g. `apt-get install -y nodejs npm`).",
            std::env::var_os("PATH")
        )
    });
    let bin = pm2_bin(version);
    if bin.is_file() {
        return bin;
    }
    if which("npm").is_none() {
        panic!(
            "pm2 {version} is not installed at {} and `npm` was not found on PATH ({:?}) \
             to install it (node is at {}). Install npm (e.g. `apt-get install -y npm`).",
            bin.display(),
            std::env::var_os("PATH"),
            node.display()
        );
    }
    let script = repo_root().join("tests/support/install-pm2.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(version)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    if !out.status.success() || !bin.is_file() {
        panic!(
            "{} {version} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// Run a command with a timeout, capturing stdout and stderr. The child gets its
/// own process group, which is SIGKILLed on timeout. On timeout the returned
/// status is "killed by SIGKILL" and stderr ends with a `[pm2 harness] TIMEOUT` line.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pgid = child.id() as i32;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let to = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let te = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => panic!("wait for {cmd:?}: {e}"),
        }
        if Instant::now() >= deadline {
            timed_out = true;
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            break child
                .wait()
                .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        }
        thread::sleep(Duration::from_millis(10));
    };
    // A grandchild that kept the pipes open (e.g. a daemon spawned by the CLI
    // without redirecting them) must not block us: give readers a bounded time.
    let stdout = join_bounded(to, Duration::from_secs(2));
    let mut stderr = join_bounded(te, Duration::from_secs(2));
    if timed_out {
        let _ = writeln!(
            stderr,
            "[pm2 harness] TIMEOUT after {:?}: {:?} was SIGKILLed",
            timeout, cmd
        );
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn join_bounded(h: thread::JoinHandle<Vec<u8>>, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        if Instant::now() >= deadline {
            return b"[pm2 harness] output pipe still held open by a descendant\n".to_vec();
        }
        thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap_or_default()
}

/// Pids of every `PM2 v<x>: God Daemon (<home>)` process (any version) on the host.
pub fn god_daemons_for_home(home: &Path) -> Vec<i32> {
    let needle = format!(": God Daemon ({})", home.display());
    all_pids()
        .into_iter()
        .filter(|&pid| {
            read_cmdline(pid)
                .map(|c| c.starts_with("PM2 v") && c.contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Pids of every process (other than this one) whose environment holds exactly
/// `PM2_HOME=<home>`.
pub fn processes_with_home(home: &Path) -> Vec<i32> {
    let entry = format!("PM2_HOME={}", home.display()).into_bytes();
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|e| e == entry.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}

/// Every process that belongs to `home`: its God daemon(s) and everything that
/// carries `PM2_HOME=<home>` in its environment. Zombies have neither, so they
/// are not listed.
pub fn processes_of_home(home: &Path) -> Vec<i32> {
    let mut v = god_daemons_for_home(home);
    for p in processes_with_home(home) {
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v.sort();
    v
}

fn all_pids() -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                v.push(pid);
            }
        }
    }
    v
}

/// `/proc/<pid>/cmdline` with NULs turned into spaces (trailing ones trimmed).
pub fn read_cmdline(pid: i32) -> Option<String> {
    let b = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let s: String = String::from_utf8_lossy(&b).replace('\0', " ");
    Some(s.trim_end().to_string())
}

/// Parent pid of `pid` from /proc/<pid>/stat.
pub fn ppid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Is `pid` alive and not a zombie?
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the first field after the ")" that closes comm
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// A throw-away pm2 daemon of one version.
pub struct Pm2 {
    version: String,
    node: PathBuf,
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    home: PathBuf,
    reaper: Option<Child>,
    /// uid and gid the daemon, the CLI and the apps run as (None: this process's).
    user: Option<(u32, u32)>,
    /// Extra environment of the daemon only (e.g. `PM2_WORKER_INTERVAL`), not of the CLI.
    daemon_env: Vec<(String, String)>,
}

/// perl child subreaper: runs its argv (the `pm2 ping` that spawns the daemon),
/// prints `ping-exit <code>`, then reaps every child and adopted orphan until none
/// is left (the daemon exited and so did all orphans), and exits.
const REAPER_PL: &str = r#"
use strict;
$| = 1;
my $nr = shift @ARGV;
syscall($nr, 36, 1, 0, 0, 0) == 0 or die "prctl(PR_SET_CHILD_SUBREAPER): $!\n";
my $pid = fork();
die "fork: $!\n" unless defined $pid;
if ($pid == 0) {
    open(STDOUT, '>', '/dev/null') or die "stdout: $!\n";
    exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!\n";
}
waitpid($pid, 0);
print "ping-exit ", ($? >> 8), "\n";
close STDOUT;
while (wait() > 0) {}
"#;

fn prctl_syscall_nr() -> Option<i64> {
    if cfg!(target_arch = "x86_64") {
        Some(157)
    } else if cfg!(target_arch = "aarch64") || cfg!(target_arch = "riscv64") {
        Some(167)
    } else {
        None
    }
}

impl Pm2 {
    /// Install `version` if needed, create a fresh home under /tmp and start its
    /// daemon. Panics with a precise message when anything is missing.
    pub fn start(version: &str) -> Pm2 {
        Pm2::start_with_user(version, None, &[])
    }

    /// [`Pm2::start`] with extra variables in the daemon's environment only, e.g.
    /// `PM2_WORKER_INTERVAL=1000` (constants.js: how often, in ms, the daemon's worker checks
    /// max_memory_restart; 30000 by default).
    pub fn start_with_daemon_env(version: &str, env: &[(&str, &str)]) -> Pm2 {
        Pm2::start_with_user(version, None, env)
    }

    /// [`Pm2::start`] with the daemon, the CLI and the apps run as `uid`:`gid`, and the
    /// home (`/tmp/p2t-XXXXXX` and its `.pm2`) owned by that user: an unprivileged user's
    /// pm2, as root sees it in production. Needs root.
    pub fn start_as(version: &str, uid: u32, gid: u32) -> Pm2 {
        Pm2::start_with_user(version, Some((uid, gid)), &[])
    }

    fn start_with_user(
        version: &str,
        user: Option<(u32, u32)>,
        daemon_env: &[(&str, &str)],
    ) -> Pm2 {
        let bin = ensure_installed(version);
        let node = which("node").expect("node on PATH (checked by ensure_installed)");
        let dir = tempfile::Builder::new()
            .prefix("p2t-")
            .tempdir_in("/tmp")
            .expect("create /tmp/p2t-XXXXXX");
        let home = dir.path().join(".pm2");
        std::fs::create_dir_all(&home).expect("create PM2_HOME");
        if let Some((uid, gid)) = user {
            for d in [dir.path(), home.as_path()] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap_or_else(|e| {
                    panic!("chown {} to {uid}:{gid} (needs root): {e}", d.display())
                });
            }
        }
        assert!(
            home.join("rpc.sock").as_os_str().len() < 100,
            "PM2_HOME too long for unix sockets: {}",
            home.display()
        );
        let mut pm2 = Pm2 {
            version: version.to_string(),
            node,
            bin,
            dir: Some(dir),
            home,
            reaper: None,
            user,
            daemon_env: daemon_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        pm2.spawn_daemon();
        pm2
    }

    fn spawn_daemon(&mut self) {
        let started = Instant::now();
        let perl = which("perl");
        match (perl, prctl_syscall_nr()) {
            (Some(perl), Some(nr)) => {
                let mut c = Command::new(perl);
                c.arg("-e")
                    .arg(REAPER_PL)
                    .arg(nr.to_string())
                    .arg(&self.node)
                    .arg(&self.bin)
                    .arg("ping");
                self.apply_env(&mut c);
                c.envs(self.daemon_env.iter().map(|(k, v)| (k, v)));
                c.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .process_group(0);
                let mut child = c.spawn().expect("spawn perl subreaper");
                let stdout = child.stdout.take().unwrap();
                self.reaper = Some(child);
                let (tx, rx) = mpsc::channel();
                thread::spawn(move || {
                    let mut line = String::new();
                    let _ = BufReader::new(stdout).read_line(&mut line);
                    let _ = tx.send(line);
                });
                match rx.recv_timeout(CMD_TIMEOUT) {
                    Ok(line) if line.trim() == "ping-exit 0" => {}
                    Ok(line) => panic!(
                        "pm2 {} ping (daemon start) failed: {:?}\n{}",
                        self.version,
                        line.trim(),
                        self.log_tail(40)
                    ),
                    Err(_) => panic!(
                        "pm2 {} ping (daemon start) did not finish within {:?}",
                        self.version, CMD_TIMEOUT
                    ),
                }
            }
            _ => {
                eprintln!(
                    "[pm2 harness] WARNING: perl (or a known prctl syscall number) is missing: \
                     starting the pm2 daemon without a child subreaper; orphaned zombies are \
                     then reaped by pid 1, which may be slow and change pm2's stop timing"
                );
                let env: Vec<(&str, &str)> = self
                    .daemon_env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let out = self.cmd_env(&env, &["ping"]);
                assert!(
                    out.status.success(),
                    "pm2 {} ping failed: {}",
                    self.version,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        // The daemon must be up and answer on its socket.
        let deadline = started + CMD_TIMEOUT;
        loop {
            if self.daemon_pid().is_some() && self.rpc("ping", serde_json::json!([{}])).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "pm2 {} daemon in {} did not come up\n{}",
                    self.version,
                    self.home.display(),
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn apply_env(&self, c: &mut Command) {
        for (k, _) in std::env::vars_os() {
            let ks = k.to_string_lossy();
            if ks.starts_with("PM2_") || ks == "pm_id" || ks == "PM2" {
                c.env_remove(&k);
            }
        }
        c.env("PM2_HOME", &self.home)
            .env("HOME", self.dir_path())
            .env("PM2_DISCRETE_MODE", "true")
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0")
            .current_dir(self.dir_path());
        if let Some((uid, gid)) = self.user {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
        }
    }

    fn dir_path(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    pub fn version(&self) -> &str {
        &self.version
    }
    /// Options for an in-process `record` of this daemon (found as `loc`) into `output`,
    /// with the defaults a user gets; `command` names the test in the capture.
    pub fn record_options(
        &self,
        loc: &pm2_trace::pm2::home::Located,
        output: PathBuf,
        command: &str,
        interpret: bool,
    ) -> pm2_trace::record::RecordOptions {
        pm2_trace::record::RecordOptions {
            pm2_home: self.home().to_owned(),
            rpc_path: loc.sockets.rpc.clone(),
            pub_path: loc.sockets.pub_.clone(),
            daemon_pid: Some(loc.pid),
            pm2_version: loc.version.clone(),
            output,
            overwrite: true,
            duration: None,
            listen: None,
            redact: pm2_trace::redact::RedactMode::Values,
            proc_mode: pm2_trace::sources::procwatch::WatchMode::Auto,
            max_message: pm2_trace::wire::amp::DEFAULT_MAX_MESSAGE,
            command_line: vec![command.into()],
            interpret,
            guardian: Some(PathBuf::from(env!("CARGO_BIN_EXE_pm2-trace"))),
        }
    }

    /// PM2_HOME of this daemon (`/tmp/p2t-XXXXXX/.pm2`).
    pub fn home(&self) -> &Path {
        &self.home
    }
    /// HOME given to the CLI and so to the apps (`/tmp/p2t-XXXXXX`).
    pub fn user_home(&self) -> &Path {
        self.dir_path()
    }
    pub fn rpc_sock(&self) -> PathBuf {
        self.home.join("rpc.sock")
    }
    pub fn pub_sock(&self) -> PathBuf {
        self.home.join("pub.sock")
    }
    pub fn log_path(&self) -> PathBuf {
        self.home.join("pm2.log")
    }
    /// The pm2 CLI script (run it with `node`).
    pub fn bin(&self) -> &Path {
        &self.bin
    }
    pub fn node(&self) -> &Path {
        &self.node
    }
    /// Pid of the perl subreaper, if it is used.
    pub fn reaper_pid(&self) -> Option<i32> {
        self.reaper.as_ref().map(|c| c.id() as i32)
    }

    /// SIGSTOP the subreaper: orphans of this home that die stay zombies (pm2's
    /// `kill(pid, 0)` still finds them) until [`Pm2::thaw_reaper`]. With pm2 7.x this
    /// makes a SIGKILLed, reparented tree member look unkillable, which is the
    /// deterministic way to get `Process with pid N could not be killed` /
    /// `app=web id=0 pid=0 could not be stopped` (the stop-timeout path; in
    /// production: a process stuck in D state). Returns false without a reaper.
    pub fn freeze_reaper(&self) -> bool {
        match self.reaper_pid() {
            Some(pid) => unsafe { libc::kill(pid, libc::SIGSTOP) == 0 },
            None => false,
        }
    }

    /// SIGCONT the subreaper (undoes [`Pm2::freeze_reaper`]).
    pub fn thaw_reaper(&self) -> bool {
        match self.reaper_pid() {
            Some(pid) => unsafe { libc::kill(pid, libc::SIGCONT) == 0 },
            None => false,
        }
    }

    /// The daemon's pid from `$PM2_HOME/pm2.pid`, if that process is alive.
    pub fn daemon_pid(&self) -> Option<i32> {
        let s = std::fs::read_to_string(self.home.join("pm2.pid")).ok()?;
        let pid: i32 = s.trim().parse().ok()?;
        if pid_alive(pid) {
            Some(pid)
        } else {
            None
        }
    }

    /// God daemons of this home found in /proc (normally exactly one).
    pub fn god_daemons_for_home(&self) -> Vec<i32> {
        god_daemons_for_home(&self.home)
    }

    /// Wait until no daemon of this home runs (`pm2 kill` answers before its daemon has
    /// exited); whether none was left within `timeout`.
    pub fn wait_daemon_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.god_daemons_for_home().is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Processes that belong to this home (daemon + everything with its PM2_HOME).
    pub fn processes(&self) -> Vec<i32> {
        processes_of_home(&self.home)
    }

    /// A `Command` for the pm2 CLI of this version with this home's environment.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(&self.node);
        c.arg(&self.bin).args(args);
        self.apply_env(&mut c);
        c
    }

    /// Run `pm2 <args>` (timeout [`CMD_TIMEOUT`]).
    pub fn cmd(&self, args: &[&str]) -> Output {
        self.cmd_env(&[], args)
    }

    /// Run `pm2 <args>` with extra environment variables. `pm2 start` and
    /// `pm2 restart --update-env` copy the CLI's environment into the app's.
    pub fn cmd_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.cmd_full(env, args, CMD_TIMEOUT)
    }

    pub fn cmd_full(&self, env: &[(&str, &str)], args: &[&str], timeout: Duration) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run_with_timeout(&mut c, timeout)
    }

    /// Run `pm2 <args>` from directory `dir`, as a shell would after `cd dir` (the
    /// logical `PWD` is `dir` even when it is reached through a symlink).
    pub fn cmd_in(&self, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = self.command(args);
        c.current_dir(dir).env("PWD", dir);
        for (k, v) in env {
            c.env(k, v);
        }
        run_with_timeout(&mut c, CMD_TIMEOUT)
    }

    /// Run `pm2 <args>` and panic with its output unless it exits 0.
    pub fn cmd_ok(&self, args: &[&str]) -> Output {
        let out = self.cmd(args);
        assert_ok(&out, args);
        out
    }

    /// `PORT=<port> [env] pm2 start tests/apps/<app> --name <name> [extra]`.
    pub fn start_app(&self, name: &str, app: &str, port: u16, extra: &[&str]) -> Output {
        self.start_app_env(name, app, port, &[], extra)
    }

    pub fn start_app_env(
        &self,
        name: &str,
        app: &str,
        port: u16,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Output {
        let path = app_path(app);
        let path = path.to_str().expect("utf-8 app path");
        let port_s = port.to_string();
        let mut all_env: Vec<(&str, &str)> = vec![("PORT", &port_s)];
        all_env.extend_from_slice(env);
        let mut args = vec!["start", path, "--name", name];
        args.extend_from_slice(extra);
        let out = self.cmd_env(&all_env, &args);
        assert_ok(&out, &args);
        out
    }

    /// `pm2 jlist` through the CLI, parsed.
    pub fn jlist(&self) -> Value {
        let out = self.cmd(&["jlist"]);
        assert_ok(&out, &["jlist"]);
        let s = String::from_utf8_lossy(&out.stdout);
        // jlist prints one JSON array; skip any banner line before it.
        let start = s
            .lines()
            .position(|l| l.trim_start().starts_with('['))
            .unwrap_or_else(|| panic!("pm2 jlist printed no JSON array:\n{s}"));
        let json: String = s.lines().skip(start).collect::<Vec<_>>().join("\n");
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("pm2 jlist: bad JSON ({e}):\n{s}"))
    }

    /// One RPC call on rpc.sock (axon framing, see the field notes), without the
    /// CLI: `[j:{"type":"call","method":M,"args":ARGS}, s:<pid>:<n>]` and the reply's
    /// `args` array (`{"args":[...]}`), or Err with the daemon's `error`.
    pub fn rpc(&self, method: &str, args: Value) -> Result<Value, String> {
        rpc_call(&self.rpc_sock(), method, args, Duration::from_secs(10))
    }

    /// `getMonitorData` through the socket: the same array `pm2 jlist` prints.
    pub fn monitor_data(&self) -> Result<Value, String> {
        let mut r = self.rpc("getMonitorData", serde_json::json!([{}]))?;
        Ok(r.get_mut(0).map(Value::take).unwrap_or(Value::Null))
    }

    /// The getMonitorData entry of app `name` (first one with that name).
    pub fn app(&self, name: &str) -> Option<Value> {
        let list = self.monitor_data().ok()?;
        list.as_array()?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    }

    /// `pm2_env.status` of app `name`.
    pub fn status(&self, name: &str) -> Option<String> {
        self.app(name)
            .and_then(|p| p["pm2_env"]["status"].as_str().map(str::to_string))
    }

    /// Poll (every 50 ms, over the socket) until app `name` has `pm2_env.status ==
    /// status`; Ok(entry) or Err(description of the last state seen).
    pub fn wait_for_status(
        &self,
        name: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(p) = self.app(name) {
                if p["pm2_env"]["status"].as_str() == Some(status) {
                    return Ok(p);
                }
                last = Some(p);
            }
            if Instant::now() >= deadline {
                let desc = match &last {
                    Some(p) => format!(
                        "status={} restart_time={} unstable_restarts={} pid={}",
                        p["pm2_env"]["status"],
                        p["pm2_env"]["restart_time"],
                        p["pm2_env"]["unstable_restarts"],
                        p["pid"]
                    ),
                    None => "app not found".to_string(),
                };
                return Err(format!(
                    "app {name} did not reach status {status} within {timeout:?} (pm2 {}): last {desc}",
                    self.version
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The whole pm2.log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of pm2.log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `$PM2_HOME/logs/<name>-out.log` and `-error.log`.
    pub fn app_out_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.home.join("logs").join(format!("{name}-out.log")))
            .unwrap_or_default()
    }
    pub fn app_err_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.home.join("logs").join(format!("{name}-error.log")))
            .unwrap_or_default()
    }

    /// Stop the daemon and everything of this home now (what Drop does).
    pub fn shutdown(&mut self) {
        if self.dir.is_none() {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "[pm2 harness] pm2 {} home {}: last pm2.log lines:\n{}",
                self.version,
                self.home.display(),
                self.log_tail(40)
            );
        }
        // 0. a frozen reaper could not reap what we are about to kill
        self.thaw_reaper();
        // 1. SIGKILL the daemon(s) of this home first, so that none restarts an app we
        //    kill next. Not `pm2 kill`: that runs a node CLI and stops the apps one by
        //    one, each up to its kill_timeout (1.6 s for the apps that drain), which is
        //    CPU and idle time in every test for a result nobody looks at.
        sigkill_until_gone(|| self.god_daemons_for_home());
        // 2. SIGKILL whatever is left of this home (not the reaper yet: it must
        //    stay to reap what we kill), until nothing is left
        let reaper = self.reaper_pid();
        sigkill_until_gone(|| {
            self.processes()
                .into_iter()
                .filter(|p| Some(*p) != reaper)
                .collect()
        });
        // 3. the reaper exits once it has no child left; make sure it does
        if let Some(mut r) = self.reaper.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match r.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = r.kill();
                        let _ = r.wait();
                        break;
                    }
                }
            }
        }
        // 4. remove the temp dir
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if dir.close().is_err() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// SIGKILL the processes `list` names, again and again (50 times at most, 20 ms apart),
/// until it names none.
fn sigkill_until_gone(list: impl Fn() -> Vec<i32>) {
    for _ in 0..50 {
        let left = list();
        if left.is_empty() {
            break;
        }
        for pid in left {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Panic with the command's output unless it exited 0.
pub fn assert_ok(out: &Output, args: &[&str]) {
    if !out.status.success() {
        panic!(
            "pm2 {:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---- minimal axon RPC client (std only) -----------------------------------

/// One axon message of `args` (each with its `j:`/`s:` prefix), framed.
pub fn encode_msg(args: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![(1u8 << 4) | (args.len() as u8)];
    for a in args {
        v.extend_from_slice(&(a.len() as u32).to_be_bytes());
        v.extend_from_slice(a);
    }
    v
}

/// Read one axon message: its arguments as raw bytes (with their `j:`/`s:` prefix).
pub fn read_msg(r: &mut impl Read) -> std::io::Result<Vec<Vec<u8>>> {
    let mut h = [0u8; 1];
    r.read_exact(&mut h)?;
    let argc = (h[0] & 0x0f) as usize;
    let mut args = Vec::with_capacity(argc);
    for _ in 0..argc {
        let mut l = [0u8; 4];
        r.read_exact(&mut l)?;
        let mut b = vec![0u8; u32::from_be_bytes(l) as usize];
        r.read_exact(&mut b)?;
        args.push(b);
    }
    Ok(args)
}

/// One request/reply on a pm2 rpc.sock. Returns the reply's `args` array.
pub fn rpc_call(
    sock: &Path,
    method: &str,
    args: Value,
    timeout: Duration,
) -> Result<Value, String> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut s =
        UnixStream::connect(sock).map_err(|e| format!("connect {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let id = format!(
        "{}:{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let req = serde_json::json!({"type": "call", "method": method, "args": args});
    let msg = encode_msg(&[
        format!("j:{req}").into_bytes(),
        format!("s:{id}").into_bytes(),
    ]);
    s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
    loop {
        let m = read_msg(&mut s).map_err(|e| format!("read reply to {method}: {e}"))?;
        let is_ours = m
            .get(1)
            .map(|a| a.as_slice() == format!("s:{id}").as_bytes())
            .unwrap_or(false);
        if !is_ours {
            continue;
        }
        let body = m.first().ok_or("empty reply")?;
        let body = body.strip_prefix(b"j:").ok_or("reply is not JSON")?;
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("reply JSON: {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("{method}: {err}"));
        }
        return Ok(v.get("args").cloned().unwrap_or(Value::Null));
    }
}
