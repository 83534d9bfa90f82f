//! A hostile PM2_HOME owner against root running pm2-trace (issue #10).
//!
//! `nobody` owns PM2_HOME and runs a real pm2 daemon (5.4.3 and 7.0.4). Root runs
//! `pm2-trace record` (interposing, with `--listen`, with the capture inside PM2_HOME) and
//! `pm2-trace repair` (and `explain`) dozens of times while an attacker process, running as `nobody`,
//! races them with inotify: every new entry the tool makes in PM2_HOME is swapped for a
//! symlink into a root-only directory (directories: renamed away or removed, then
//! replaced), and symlinks wait at every fixed name the tool uses (the lock file, the
//! daemon socket's second name, `pm2.pid`, the capture and `--listen` names).
//!
//! Twice per version the recorder is SIGKILLed mid-recording, so its guardian restores
//! under attack; at the end the owner records their own daemon without root (the least
//! privilege README and `record --help` recommend).
//!
//! Pass: nothing in the root-only directory changes (owner, mode, content, entries); every
//! run of the tool either works or fails with a clear error (never a panic, a signal or a
//! hang); the daemon is never harmed by the tool (same pid, alone, its own socket at
//! `rpc.sock`, answering).
//!
//! The daemon's own names (`rpc.sock`, `pub.sock`) are left to the daemon here: what the
//! owner can do to them (move them, plant symlinks there) is covered by the unit test
//! `restore_puts_only_the_daemon_back_whatever_was_moved` in `sources/guardian.rs`.
//!
//! Needs root and the `nobody` user (uid and gid 65534); fails (never skips) without them.
//! The attacker is this test binary itself, re-run as `nobody` with `__attacker` (so no C
//! compiler is needed): hence `harness = false`.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// Runs of each kind per daemon version and phase.
const ROUNDS: usize = 8;
const VERSIONS: [&str; 2] = ["5.4.3", "7.0.4"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__attacker") {
        attacker(
            Path::new(&args[2]),
            Path::new(&args[3]),
            args.get(4).is_some(),
        );
        return;
    }
    let names: Vec<String> = VERSIONS
        .iter()
        .map(|v| format!("hostile_owner_{v}"))
        .collect();
    if args.iter().any(|a| a == "--list") {
        for n in &names {
            println!("{n}: test");
        }
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let selected: Vec<(&str, &String)> = VERSIONS
        .iter()
        .copied()
        .zip(&names)
        .filter(|(_, n)| filter.is_none_or(|f| n.contains(f.as_str())))
        .collect();
    println!("\nrunning {} tests", selected.len());
    prepare();
    let mut failed = Vec::new();
    for (v, name) in selected {
        let ok = std::panic::catch_unwind(|| hostile_owner(v)).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(name.clone());
        }
    }
    if !failed.is_empty() {
        println!("\nfailures: {failed:?}\ntest result: FAILED");
        std::process::exit(101);
    }
    println!("\ntest result: ok");
}

// ------------------------------------------------------------------ setup

/// Whether `nobody` can read `path` (and so reach every directory above it).
fn readable_by_nobody(path: &Path) -> bool {
    Command::new("/bin/sh")
        .args(["-c", "test -r \"$1\"", "sh"])
        .arg(path)
        .uid(NOBODY)
        .gid(NOGROUP)
        .status()
        .is_ok_and(|s| s.success())
}

/// `exe`, or a copy of it that `nobody` can run (when the checkout is not readable to
/// `nobody`, e.g. under /root).
fn runnable_by_nobody(exe: PathBuf, name: &str) -> PathBuf {
    if readable_by_nobody(&exe) {
        return exe;
    }
    let dir = std::env::temp_dir().join(format!("p2t-hostile-exe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join(name);
    if !copy.exists() {
        std::fs::copy(&exe, &copy).expect("copy a binary for nobody");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy
}

/// Where `nobody` can run the attacker (this binary) from.
fn attacker_exe() -> PathBuf {
    runnable_by_nobody(std::env::current_exe().expect("current_exe"), "attacker")
}

/// Where `nobody` can run pm2-trace from (the least-privilege run).
fn owner_exe() -> PathBuf {
    runnable_by_nobody(recorder::bin(), "pm2-trace")
}

/// Root and `nobody` are needed; the pinned pm2 versions must be readable by `nobody`
/// (when the checkout is not, e.g. under /root, they are copied to /tmp for this test).
fn prepare() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the hostile-owner test needs root: it checks what root does in another user's PM2_HOME"
    );
    let pw = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    assert!(
        pw.lines().any(|l| l.starts_with("nobody:x:65534:")),
        "the hostile-owner test needs the user `nobody` (uid 65534) in /etc/passwd"
    );
    let unreadable: Vec<&str> = VERSIONS
        .iter()
        .copied()
        .filter(|v| {
            pm2::ensure_installed(v);
            !readable_by_nobody(&pm2::pm2_bin(v))
        })
        .collect();
    if !unreadable.is_empty() {
        let root = std::env::temp_dir().join("p2t-hostile-pm2");
        for v in VERSIONS {
            let to = root.join(v);
            if !to.join("node_modules/pm2/bin/pm2").exists() {
                std::fs::create_dir_all(&root).unwrap();
                let st = Command::new("cp")
                    .arg("-a")
                    .arg(pm2::install_dir(v))
                    .arg(&to)
                    .status()
                    .expect("cp");
                assert!(st.success(), "copying pm2 {v} for nobody failed");
            }
        }
        let st = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&root)
            .status()
            .expect("chmod");
        assert!(st.success());
        std::fs::set_permissions(
            std::env::temp_dir().join("p2t-hostile-pm2"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // Single-threaded here: nothing else reads the environment yet.
        std::env::set_var("PM2_TRACE_PM2_ROOT", &root);
    }
}

// ------------------------------------------------------------------ the root-only vault

/// A root-only directory (0700) with a root-only file: the attacker's symlinks point into
/// it, at existing and at not-yet-existing names.
struct Vault {
    dir: tempfile::TempDir,
}

type Snapshot = BTreeMap<PathBuf, (u32, u32, u32, Vec<u8>)>;

impl Vault {
    fn new() -> Vault {
        let dir = tempfile::Builder::new()
            .prefix("p2t-vault-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:only:content\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(sub.join("inner"), "inner\n").unwrap();
        Vault { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Owner, group, mode and content (or entry names) of everything in the vault.
    fn snapshot(&self) -> Snapshot {
        fn walk(p: &Path, out: &mut Snapshot) {
            let m = std::fs::symlink_metadata(p).unwrap();
            let content = if m.is_dir() {
                let mut names: Vec<OsString> = std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                for n in &names {
                    walk(&p.join(n), out);
                }
                names.join(OsStr::new("\n")).as_bytes().to_vec()
            } else if m.file_type().is_symlink() {
                std::fs::read_link(p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                std::fs::read(p).unwrap()
            };
            out.insert(p.to_owned(), (m.uid(), m.gid(), m.mode(), content));
        }
        let mut out = Snapshot::new();
        walk(self.path(), &mut out);
        out
    }
}

// ------------------------------------------------------------------ the attacker

/// Names the tool uses in PM2_HOME, and where the attacker's symlinks there point.
fn planted(vault: &Path, plant_lock: bool) -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![
        ("rpc.sock.pm2-trace-daemon", vault.join("secret")),
        ("pm2.pid", vault.join("secret")),
        ("capture.bin", vault.join("new-capture")),
        ("listen.sock", vault.join("secret")),
        // What `explain` reads as root: the daemon's log, its dump and the apps' logs.
        ("pm2.log", vault.join("secret")),
        ("dump.pm2", vault.join("secret")),
        ("logs", vault.join("sub")),
    ];
    if plant_lock {
        v.push(("pm2-trace.lock", vault.join("new-lock")));
    }
    v
}

/// Body of the attacker (runs as `nobody`): plant symlinks at the tool's names, then swap
/// every new entry for a symlink into the vault, forever (the test kills it). Prints one
/// line per swap.
fn attacker(home: &Path, vault: &Path, plant_lock: bool) {
    use std::io::Write;
    let fixed = planted(vault, plant_lock);
    let plant = |name: &str, target: &Path| {
        let p = home.join(name);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return;
        }
        if std::fs::symlink_metadata(&p).is_ok() {
            let _ = std::fs::rename(&p, home.join(format!("{name}.atk")));
        }
        let _ = std::os::unix::fs::symlink(target, &p);
    };
    let c = CString::new(home.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain inotify calls with valid arguments.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "inotify_init1");
    let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_MOVED_FROM;
    // SAFETY: as above.
    assert!(unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) } >= 0);
    for (n, t) in &fixed {
        plant(n, t);
    }
    println!("ready");
    let mut out = std::io::stdout();
    let _ = out.flush();
    let mut buf = vec![0u8; 64 * 1024];
    let mut flip = false;
    loop {
        // SAFETY: read into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let mut off = 0usize;
        while off + std::mem::size_of::<libc::inotify_event>() <= n as usize {
            // SAFETY: the kernel wrote whole events; read_unaligned copes with alignment.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_start = off + std::mem::size_of::<libc::inotify_event>();
            let raw = &buf[name_start..name_start + ev.len as usize];
            let name =
                OsStr::from_bytes(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())])
                    .to_owned();
            off = name_start + ev.len as usize;
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue;
            };
            if ev.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                if let Some((n, t)) = fixed.iter().find(|(n, _)| *n == name) {
                    plant(n, t);
                }
                continue;
            }
            // The daemon's own names are its to keep (see the module comment); without
            // `plant-lock` the lock file is left alone too (once swapped, it refuses every
            // later run: phase 1 checks that).
            let exempt = ["rpc.sock", "pub.sock"].contains(&name.as_str())
                || (!plant_lock && name == "pm2-trace.lock");
            if exempt || name.ends_with(".atk") {
                continue;
            }
            let p = home.join(&name);
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.file_type().is_symlink() {
                continue;
            }
            let aside = home.join(format!("{name}.atk"));
            if m.is_dir() {
                flip = !flip;
                let gone = if flip {
                    std::fs::rename(&p, &aside).is_ok()
                } else {
                    std::fs::remove_dir(&p).is_ok() || std::fs::rename(&p, &aside).is_ok()
                };
                if gone {
                    let _ = std::os::unix::fs::symlink(vault, &p);
                }
            } else if std::fs::rename(&p, &aside).is_ok() {
                let _ = std::os::unix::fs::symlink(vault.join("secret"), &p);
            }
            let _ = writeln!(out, "swapped {name}");
            let _ = out.flush();
        }
    }
}

/// The attacker process, killed on drop.
struct Attacker {
    child: Child,
    swaps: Arc<AtomicU64>,
}

impl Attacker {
    fn start(home: &Path, vault: &Path, plant_lock: bool) -> Attacker {
        let mut cmd = Command::new(attacker_exe());
        cmd.arg("__attacker").arg(home).arg(vault);
        if plant_lock {
            cmd.arg("plant-lock");
        }
        let mut child = cmd
            .uid(NOBODY)
            .gid(NOGROUP)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the attacker as nobody");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        assert_eq!(
            first.as_deref(),
            Some("ready"),
            "the attacker did not start"
        );
        let swaps = Arc::new(AtomicU64::new(0));
        let counter = swaps.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if l.starts_with("swapped") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Attacker { child, swaps }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ the tool under attack

/// What one run of the tool did.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Outcome {
    Worked,
    FailedClearly,
}

/// Run `pm2-trace ARGS` as root; it must exit 0, or 2 with a `pm2-trace: error:` line,
/// within a generous hang guard, and never panic.
fn run_tool(args: &[OsString], what: &str) -> (Outcome, String) {
    let mut child = Command::new(recorder::bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pm2-trace");
    let drain = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(r), &mut s);
            s
        })
    };
    let out_reader = drain(Box::new(child.stdout.take().unwrap()));
    let reader = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: pm2-trace hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap();
    let stdout = out_reader.join().unwrap();
    // Nothing of a root-only file reaches the output, whatever the attacker linked.
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("root:only:content") && !text.contains("inner\n"),
            "{what}: pm2-trace printed the content of a root-only file:\n{text}"
        );
    }
    assert!(
        !stderr.contains("panicked"),
        "{what}: pm2-trace panicked:\n{stderr}"
    );
    match status.code() {
        Some(0) => (Outcome::Worked, stderr),
        Some(2) if stderr.contains("pm2-trace: error: ") => (Outcome::FailedClearly, stderr),
        _ => panic!("{what}: pm2-trace ended with {status} and no clear error:\n{stderr}"),
    }
}

/// The daemon is as it was: same pid, alone for its home, its own socket at `rpc.sock`,
/// answering.
fn daemon_unharmed(pm2: &pm2::Pm2, pid: i32, sock_ino: u64, when: &str) {
    assert!(
        pm2::pid_alive(pid),
        "{when}: the daemon (pid {pid}) is gone"
    );
    assert_eq!(
        pm2.god_daemons_for_home(),
        vec![pid],
        "{when}: a second daemon appeared"
    );
    let m = std::fs::symlink_metadata(pm2.rpc_sock()).expect("rpc.sock");
    assert_eq!(
        m.ino(),
        sock_ino,
        "{when}: rpc.sock is not the daemon's socket"
    );
    pm2.rpc("ping", serde_json::json!([{}]))
        .unwrap_or_else(|e| panic!("{when}: the daemon does not answer: {e}"));
}

fn hostile_owner(version: &str) {
    let started = Instant::now();
    let vault = Vault::new();
    let before = vault.snapshot();
    let pm2 = pm2::Pm2::start_as(version, NOBODY, NOGROUP);
    let home = pm2.home().to_owned();
    let pid = pm2.daemon_pid().expect("daemon pid");
    let sock_ino = std::fs::metadata(pm2.rpc_sock()).unwrap().ino();
    let m = std::fs::metadata(&home).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (NOBODY, NOGROUP),
        "precondition: nobody owns PM2_HOME"
    );
    // Captures that should work go to a root-only directory.
    let out_dir = tempfile::Builder::new()
        .prefix("p2t-hostile-out-")
        .tempdir_in("/tmp")
        .unwrap();
    let h = home.as_os_str();
    let mut tally: BTreeMap<(&str, Outcome), u32> = BTreeMap::new();
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    // After every run of the tool: the daemon is untouched and reachable by its name.
    let mut note = |kind: &'static str, (o, stderr): (Outcome, String)| {
        if std::panic::catch_unwind(|| daemon_unharmed(&pm2, pid, sock_ino, kind)).is_err() {
            panic!("after {kind} ({o:?}), the daemon was not as before; the tool said:\n{stderr}");
        }
        *tally.entry((kind, o)).or_default() += 1;
        if o == Outcome::FailedClearly {
            let line = stderr
                .lines()
                .find(|l| l.contains("pm2-trace: error: "))
                .unwrap_or_default()
                .replace(home.to_str().unwrap(), "$HOME");
            // Group by the message without numbers (pids, nonces).
            let key: String = line
                .chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .collect();
            *errors.entry(key).or_default() += 1;
        }
    };
    let mut swaps = 0;
    // Phase 1: a symlink waits at the lock file's name too: every run must refuse it.
    // Phase 2: the lock is free; everything the tool creates is raced.
    for plant_lock in [true, false] {
        let atk = Attacker::start(&home, vault.path(), plant_lock);
        let rounds = if plant_lock { 2 } else { ROUNDS };
        for i in 0..rounds {
            let what = |k: &str| format!("pm2 {version}, lock planted {plant_lock}, {k} #{i}");
            let cap = out_dir.path().join(format!("c-{plant_lock}-{i}.bin"));
            let fresh = home.join(format!("fresh-{plant_lock}-{i}.sock"));
            let record = |extra: &[&OsStr]| -> Vec<OsString> {
                let mut a: Vec<OsString> = vec!["record".into(), "--pm2-home".into(), h.into()];
                a.extend(
                    ["--duration", "400ms", "--quiet", "--proc", "off"]
                        .iter()
                        .map(OsString::from),
                );
                a.extend(extra.iter().map(|s| s.to_os_string()));
                a
            };
            // Interposed, capture in a root-only directory.
            note(
                "record",
                run_tool(
                    &record(&[OsStr::new("-o"), cap.as_os_str()]),
                    &what("record"),
                ),
            );
            // The capture inside PM2_HOME, where a symlink waits at its name.
            let in_home = home.join("capture.bin");
            note(
                "record -o $HOME/capture.bin --force",
                run_tool(
                    &record(&[OsStr::new("-o"), in_home.as_os_str(), OsStr::new("--force")]),
                    &what("record into PM2_HOME"),
                ),
            );
            // --listen at a planted name, and at a fresh one (staged and raced).
            let cap2 = out_dir.path().join(format!("l-{plant_lock}-{i}.bin"));
            let listen = home.join("listen.sock");
            note(
                "record --listen $HOME/listen.sock",
                run_tool(
                    &record(&[
                        OsStr::new("-o"),
                        cap2.as_os_str(),
                        OsStr::new("--listen"),
                        listen.as_os_str(),
                    ]),
                    &what("record --listen planted"),
                ),
            );
            let cap3 = out_dir.path().join(format!("f-{plant_lock}-{i}.bin"));
            note(
                "record --listen $HOME/fresh.sock",
                run_tool(
                    &record(&[
                        OsStr::new("-o"),
                        cap3.as_os_str(),
                        OsStr::new("--listen"),
                        fresh.as_os_str(),
                    ]),
                    &what("record --listen fresh"),
                ),
            );
            // The read-only explanation: every file it reads as root is raced too.
            note(
                "explain",
                run_tool(
                    &["explain".into(), "--pm2-home".into(), h.to_os_string()],
                    &what("explain"),
                ),
            );
            note(
                "explain --json",
                run_tool(
                    &[
                        "explain".into(),
                        "--json".into(),
                        "--pm2-home".into(),
                        h.to_os_string(),
                    ],
                    &what("explain --json"),
                ),
            );
            note(
                "repair",
                run_tool(
                    &["repair".into(), "--pm2-home".into(), h.to_os_string()],
                    &what("repair"),
                ),
            );
            assert_eq!(
                vault.snapshot(),
                before,
                "{}: the root-only directory changed",
                what("round")
            );
            daemon_unharmed(&pm2, pid, sock_ino, &what("after the round"));
        }
        if !plant_lock {
            // The recorder SIGKILLed mid-recording, under attack: its guardian restores.
            for i in 0..2 {
                let cap = out_dir.path().join(format!("k-{i}.bin"));
                let mut child = Command::new(recorder::bin())
                    .args(["record", "--quiet", "--proc", "off", "--pm2-home"])
                    .arg(h)
                    .arg("-o")
                    .arg(&cap)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                let _ = child.kill();
                let _ = child.wait();
                // The guardian acts on EOF; give it a generous moment (a hang guard, not a
                // timing check: the guardian_restore benchmark measures it).
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::fs::symlink_metadata(pm2.rpc_sock())
                    .map(|m| m.ino())
                    .ok()
                    != Some(sock_ino)
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                daemon_unharmed(
                    &pm2,
                    pid,
                    sock_ino,
                    &format!("pm2 {version}: after SIGKILL #{i}"),
                );
                assert_eq!(
                    vault.snapshot(),
                    before,
                    "after SIGKILL #{i}: the root-only directory changed"
                );
            }
        }
        swaps += atk.swaps.load(Ordering::Relaxed);
        drop(atk);
        if plant_lock {
            let lock = home.join("pm2-trace.lock");
            assert!(
                std::fs::symlink_metadata(&lock)
                    .unwrap()
                    .file_type()
                    .is_symlink(),
                "the planted lock symlink was replaced"
            );
            std::fs::remove_file(lock).unwrap();
        }
    }
    assert_eq!(vault.snapshot(), before, "the root-only directory changed");
    daemon_unharmed(&pm2, pid, sock_ino, "at the end");
    // Least privilege: the daemon's owner records their own daemon without root.
    let owner_cap = home.join("owner.bin");
    let owner = Command::new(owner_exe())
        .args(["record", "--duration", "1s", "--quiet", "--pm2-home"])
        .arg(h)
        .arg("-o")
        .arg(&owner_cap)
        .env("HOME", pm2.user_home())
        .uid(NOBODY)
        .gid(NOGROUP)
        .output()
        .unwrap();
    let owner_err = String::from_utf8_lossy(&owner.stderr);
    assert!(
        owner.status.success() && owner_err.contains("daemon socket restored"),
        "the daemon's owner could not record it without root:\n{owner_err}"
    );
    assert_eq!(std::fs::metadata(&owner_cap).unwrap().uid(), NOBODY);
    daemon_unharmed(&pm2, pid, sock_ino, "after the owner's own recording");
    // What root left in the owner's directory (reported: none of it can be a root file
    // the owner could use; private staging directories moved away by the attacker stay).
    let root_owned: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let m = e.metadata().ok()?;
            (m.uid() == 0).then(|| format!("{} ({:o})", e.file_name().to_string_lossy(), m.mode()))
        })
        .collect();
    println!(
        "[hostile_owner {version}] {:.1}s, {swaps} swaps by the attacker",
        started.elapsed().as_secs_f64()
    );
    for ((kind, o), n) in &tally {
        println!("[hostile_owner {version}]   {kind}: {o:?} x{n}");
    }
    for (e, n) in &errors {
        println!("[hostile_owner {version}]   x{n} {e}");
    }
    println!("[hostile_owner {version}]   root-owned entries left in PM2_HOME: {root_owned:?}");
    assert!(
        swaps > 0,
        "the attacker never swapped anything: the test raced nothing"
    );
    // The races must not make the tool useless: interposed recording works in some runs
    // once the lock is free, and a planted capture name or --listen name is always refused.
    assert!(
        tally
            .get(&("record", Outcome::Worked))
            .copied()
            .unwrap_or(0)
            > 0,
        "record never worked under attack: {tally:?}"
    );
    for kind in [
        "record -o $HOME/capture.bin --force",
        "record --listen $HOME/listen.sock",
    ] {
        assert_eq!(
            tally.get(&(kind, Outcome::Worked)),
            None,
            "{kind} worked through a planted symlink"
        );
    }
}
