//! Who holds an address anywhere on this host: which process has a TCP/UDP port listening
//! (or bound) or a unix socket path bound, and who that process is.
//!
//! The process watcher sees only the PM2 daemon's tree and the processes whose environment
//! names its `PM2_HOME`. A port the new generation needs may be held by anything else: an
//! app of another PM2 daemon (another `PM2_HOME`, another user), a systemd service, a
//! container, a stray `node server.js`. This module reads the whole host through `/proc`:
//!
//! 1. [`listeners`]: the socket tables (`/proc/<pid>/net/{tcp,tcp6,udp,udp6,unix}`) of every
//!    network namespace, read once per namespace through one process living in it, keeping
//!    listening TCP, bound unconnected UDP and bound listening unix sockets.
//! 2. [`owners`]: the processes whose `/proc/<pid>/fd` holds those socket inodes (a socket
//!    shared by a parent and its forked children has several).
//! 3. [`identify`]: who a process is, from `/proc` alone ([`Identity`]): its command line,
//!    uid, whether it is a PM2 God daemon (and of which home, from its process title),
//!    whether it is a pm2 app (`PM2_HOME`, `name`, `pm_id`, `restart_time` from
//!    `/proc/<pid>/environ`), and its systemd unit or container (from `/proc/<pid>/cgroup`).
//!    [`Identity::relation`] then says what that is to a given daemon: the daemon itself,
//!    one of its apps, another daemon or its app, or no pm2 at all.
//!
//! [`scan`] does the three steps for the listeners a caller cares about, and
//! [`who_holds`] for one address (what `explain` asks: who holds this port *now*).
//!
//! Security: with root privilege this reads other users' `/proc` entries, and only those:
//! every path opened is under `proc_root`, whose names are pids and fixed file names the
//! kernel controls. No path found in a socket table, an environment or a cgroup (a unix
//! socket path, a `PM2_HOME`) is ever opened or resolved here; they are returned as text.
//! Reads are bounded ([`procfs::read_bounded`]).
//!
//! Cost: one `readlink` of `ns/net` per process, the socket tables once per namespace, and
//! one `readlink` per open descriptor of every process (the descriptors are the only way to
//! tie a socket inode to a pid). Processes that vanish or deny access mid-scan are skipped
//! and counted in [`HostScan::unreadable`].

use super::procwatch::procfs;
use crate::addr::{Addr, Transport};
use crate::event::host::{HostHold, Identity, Pm2Role};
use crate::event::proc::Proto;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// A listening TCP, bound UDP or bound unix socket somewhere on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub proto: Proto,
    /// `127.0.0.1:4211`, `[::]:80`, `/run/app.sock`, `@abstract`.
    pub addr: String,
    pub port: Option<u16>,
    pub inode: u64,
    /// The inode of its network namespace (`/proc/<pid>/ns/net`), 0 when unknown.
    pub netns: u64,
}

impl Listener {
    /// Whether binding `want` (over `transport`) would fail while this is held.
    pub fn blocks(&self, transport: Transport, want: &Addr) -> bool {
        Transport::from_proto(self.proto.name()) == Some(transport)
            && Addr::parse(&self.addr).is_some_and(|a| a.conflicts(want))
    }
}

/// What a holder is to the daemon a caller records or explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// That daemon itself (cluster mode: it holds its apps' sockets).
    ThisDaemon,
    /// An app of that daemon.
    ThisDaemonsApp,
    /// Another PM2 daemon.
    OtherDaemon,
    /// An app of another PM2 daemon.
    OtherDaemonsApp,
    /// Not pm2 at all (or a pm2 app that cleared its environment).
    NotPm2,
}

/// Compare two PM2_HOME spellings (a trailing `/` is not a difference).
pub fn same_home(a: &str, b: &str) -> bool {
    let t = |s: &str| {
        let s = s.trim_end_matches('/');
        if s.is_empty() {
            "/".to_owned()
        } else {
            s.to_owned()
        }
    };
    t(a) == t(b)
}

/// What a holder is to a daemon (the type, stored in captures, is in [`crate::event::host`]).
impl Identity {
    /// What this process is to the daemon of `pm2_home`.
    pub fn relation(&self, pm2_home: &str) -> Relation {
        match &self.pm2 {
            Some(Pm2Role::Daemon { pm2_home: h }) if same_home(h, pm2_home) => Relation::ThisDaemon,
            Some(Pm2Role::Daemon { .. }) => Relation::OtherDaemon,
            Some(Pm2Role::App { pm2_home: h, .. }) if same_home(h, pm2_home) => {
                Relation::ThisDaemonsApp
            }
            Some(Pm2Role::App { .. }) => Relation::OtherDaemonsApp,
            None => Relation::NotPm2,
        }
    }
}

/// What a host-wide scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostScan {
    pub holds: Vec<HostHold>,
    /// Processes whose descriptors could not be read (gone mid-scan, or no permission).
    pub unreadable: usize,
    /// Network namespaces whose socket tables could not be read.
    pub notes: Vec<String>,
}

/// The inode of `/proc/<pid>/ns/net` (`net:[4026531840]`).
fn netns_inode(proc_root: &Path, pid: i32) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let link = procfs::net_ns(proc_root, pid)?;
    let b = link.as_os_str().as_bytes();
    let s = b.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Most bytes read from one socket table (a host with 100k sockets has ~15 MB of them).
const TABLE_LIMIT: usize = 32 << 20;

fn read_table(path: &Path) -> Option<String> {
    let (b, _) = procfs::read_bounded(path, TABLE_LIMIT).ok()?;
    Some(String::from_utf8_lossy(&b).into_owned())
}

/// Every listening TCP, bound UDP and bound listening unix socket of every network
/// namespace on the host (each read through the first pid found in it), with notes on
/// what could not be read.
pub fn listeners(proc_root: &Path) -> std::io::Result<(Vec<Listener>, Vec<String>)> {
    let mut pids = Vec::new();
    procfs::list_pids(proc_root, &mut pids)?;
    pids.sort_unstable();
    let mut namespaces: HashMap<u64, i32> = HashMap::new();
    for &p in &pids {
        if let Some(ns) = netns_inode(proc_root, p) {
            namespaces.entry(ns).or_insert(p);
        }
    }
    let mut readers: Vec<(u64, i32)> = namespaces.into_iter().collect();
    readers.sort_unstable_by_key(|&(_, p)| p);
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for (ns, reader) in readers {
        let base = proc_root.join(reader.to_string()).join("net");
        let mut read_any = false;
        for (file, proto) in [
            ("tcp", Proto::Tcp),
            ("tcp6", Proto::Tcp6),
            ("udp", Proto::Udp),
            ("udp6", Proto::Udp6),
        ] {
            let Some(text) = read_table(&base.join(file)) else {
                continue;
            };
            read_any = true;
            for line in text.lines().skip(1) {
                if let Some(s) = procfs::parse_inet_line(proto, line) {
                    if s.is_listening() {
                        out.push(Listener {
                            proto,
                            addr: s.addr_string(),
                            port: Some(s.port),
                            inode: s.inode,
                            netns: ns,
                        });
                    }
                }
            }
        }
        if let Some(text) = read_table(&base.join("unix")) {
            read_any = true;
            for line in text.lines().skip(1) {
                if let Some(u) = procfs::parse_unix_line(line) {
                    if u.is_bound_listener() {
                        if let Some(path) = u.path {
                            out.push(Listener {
                                proto: Proto::Unix,
                                addr: path,
                                port: None,
                                inode: u.inode,
                                netns: ns,
                            });
                        }
                    }
                }
            }
        }
        if !read_any {
            notes.push(format!(
                "socket tables of network namespace {ns} (through pid {reader}) unreadable"
            ));
        }
    }
    out.sort_by(|a, b| (a.proto, &a.addr, a.inode).cmp(&(b.proto, &b.addr, b.inode)));
    out.dedup_by(|a, b| a.inode == b.inode);
    Ok((out, notes))
}

/// The pids holding each of `inodes` open, in pid order, and how many processes could not
/// be read. Every process is read: a socket can be shared by any number of them.
pub fn owners(proc_root: &Path, inodes: &HashSet<u64>) -> (HashMap<u64, Vec<i32>>, usize) {
    let mut out: HashMap<u64, Vec<i32>> = HashMap::new();
    let mut unreadable = 0;
    if inodes.is_empty() {
        return (out, 0);
    }
    let mut pids = Vec::new();
    if procfs::list_pids(proc_root, &mut pids).is_err() {
        return (out, 0);
    }
    pids.sort_unstable();
    for p in pids {
        match procfs::socket_inodes(proc_root, p) {
            Ok(v) => {
                for ino in v {
                    if inodes.contains(&ino) {
                        let e = out.entry(ino).or_default();
                        if !e.contains(&p) {
                            e.push(p);
                        }
                    }
                }
            }
            Err(_) => unreadable += 1,
        }
    }
    (out, unreadable)
}

/// The unit and container a `/proc/<pid>/cgroup` text names (cgroup v2 `0::/path`, or the
/// v1 `name=systemd` hierarchy).
pub fn parse_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            text.lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })
        .or_else(|| text.lines().find_map(|l| l.splitn(3, ':').nth(2)));
    let Some(path) = path else {
        return (None, None);
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let short = |id: &str| id.chars().take(12).collect::<String>();
    let hexish = |s: &str| s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut container = None;
    for (i, seg) in segs.iter().enumerate() {
        let name = seg.strip_suffix(".scope").unwrap_or(seg);
        let found = if let Some(id) = name.strip_prefix("docker-") {
            Some(format!("docker {}", short(id)))
        } else if let Some(id) = name.strip_prefix("libpod-") {
            Some(format!("podman {}", short(id)))
        } else if let Some(id) = name.strip_prefix("cri-containerd-") {
            Some(format!("kubernetes (containerd) {}", short(id)))
        } else if let Some(id) = name.strip_prefix("crio-") {
            Some(format!("kubernetes (cri-o) {}", short(id)))
        } else if *seg == "docker" && segs.get(i + 1).is_some_and(|s| hexish(s)) {
            Some(format!("docker {}", short(segs[i + 1])))
        } else if let Some(n) = seg.strip_prefix("lxc.payload.") {
            Some(format!("lxc {n}"))
        } else if *seg == "lxc" {
            segs.get(i + 1).map(|n| format!("lxc {n}"))
        } else {
            None
        };
        if found.is_some() {
            container = found;
            break;
        }
    }
    let unit = segs
        .iter()
        .rev()
        .find(|s| {
            [".service", ".scope", ".socket", ".mount", ".swap"]
                .iter()
                .any(|suf| s.ends_with(suf))
        })
        .map(|s| s.to_string());
    (unit, container)
}

/// Most bytes of a cgroup file read.
const CGROUP_LIMIT: usize = 16 << 10;

/// The real uid from a `/proc/<pid>/status` text.
fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Who process `pid` is, or `None` if it is gone (or its stat unreadable).
pub fn identify(proc_root: &Path, pid: i32) -> Option<Identity> {
    let stat = procfs::read_stat(proc_root, pid)?;
    let dir = proc_root.join(pid.to_string());
    let (raw_cmd, _) =
        procfs::read_bounded(&dir.join("cmdline"), procfs::CMDLINE_LIMIT).unwrap_or_default();
    let args = procfs::parse_cmdline(&raw_cmd);
    let cmd = if args.is_empty() {
        format!("[{}]", stat.comm)
    } else {
        crate::event::proc::shorten(args.join(" ").trim_end(), 300)
    };
    let uid = procfs::read_bounded(&dir.join("status"), 8 << 10)
        .ok()
        .and_then(|(b, _)| parse_uid(&String::from_utf8_lossy(&b)));
    let pm2 = if let Some((_, home)) = crate::pm2::home::parse_god_title(&raw_cmd) {
        Some(Pm2Role::Daemon {
            pm2_home: home.to_string_lossy().into_owned(),
        })
    } else {
        procfs::read_environ(proc_root, pid)
            .ok()
            .and_then(|(b, _)| {
                let e = procfs::parse_pm2_env(&b);
                // An app's environment has pm_id or name next to PM2_HOME; a `pm2` CLI run with
                // PM2_HOME set has neither.
                let home = e.pm2_home?;
                (e.pm_id.is_some() || e.unique_id.is_some()).then_some(Pm2Role::App {
                    pm2_home: home,
                    name: e.name,
                    pm_id: e.pm_id,
                    generation: e.restart_time,
                })
            })
    };
    let (unit, container) = procfs::read_bounded(&dir.join("cgroup"), CGROUP_LIMIT)
        .ok()
        .map(|(b, _)| parse_cgroup(&String::from_utf8_lossy(&b)))
        .unwrap_or((None, None));
    Some(Identity {
        pid,
        start: stat.starttime,
        uid,
        cmd,
        pm2,
        unit,
        container,
    })
}

/// The listeners for which `want` holds, with their holders identified. Listeners whose
/// holders are all in `skip` (pids the caller already knows, e.g. the watcher's own) are
/// left out; so are listeners no readable process holds.
pub fn scan(
    proc_root: &Path,
    want: impl Fn(&Listener) -> bool,
    skip: &HashSet<i32>,
) -> std::io::Result<HostScan> {
    let (all, notes) = listeners(proc_root)?;
    let wanted: Vec<Listener> = all.into_iter().filter(|l| want(l)).collect();
    let inodes: HashSet<u64> = wanted.iter().map(|l| l.inode).collect();
    let (by_inode, unreadable) = owners(proc_root, &inodes);
    let mut ids: HashMap<i32, Option<Identity>> = HashMap::new();
    let mut holds = Vec::new();
    for l in wanted {
        let Some(pids) = by_inode.get(&l.inode) else {
            continue;
        };
        if pids.iter().all(|p| skip.contains(p)) {
            continue;
        }
        let mut holders: Vec<Identity> = pids
            .iter()
            .filter_map(|&p| {
                ids.entry(p)
                    .or_insert_with(|| identify(proc_root, p))
                    .clone()
            })
            .collect();
        holders.sort_by_key(|h| (h.start, h.pid));
        if holders.is_empty() {
            continue;
        }
        holds.push(HostHold {
            proto: l.proto.name().to_owned(),
            addr: l.addr,
            port: l.port,
            inode: l.inode,
            holders,
        });
    }
    Ok(HostScan {
        holds,
        unreadable,
        notes,
    })
}

/// Who holds `addr` over `transport` on this host now (every listener that conflicts with
/// it, in any network namespace).
pub fn who_holds(proc_root: &Path, transport: Transport, addr: &Addr) -> std::io::Result<HostScan> {
    scan(proc_root, |l| l.blocks(transport, addr), &HashSet::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_name_units_and_containers() {
        assert_eq!(
            parse_cgroup("0::/system.slice/nginx.service\n"),
            (Some("nginx.service".into()), None)
        );
        let docker = "0::/system.slice/docker-3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4.scope\n";
        assert_eq!(
            parse_cgroup(docker),
            (
                Some(
                    "docker-3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4.scope"
                        .into()
                ),
                Some("docker 3f2a9c1b7d4e".into())
            )
        );
        let v1 = "12:pids:/docker/abcdef0123456789abcdef\n1:name=systemd:/docker/abcdef0123456789abcdef\n";
        assert_eq!(parse_cgroup(v1).1, Some("docker abcdef012345".into()));
        let k8s = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-0123456789abcdef0123.scope\n";
        assert_eq!(
            parse_cgroup(k8s).1,
            Some("kubernetes (containerd) 0123456789ab".into())
        );
        assert_eq!(
            parse_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            (Some("session-3.scope".into()), None)
        );
        assert_eq!(
            parse_cgroup("0::/lxc.payload.web/init.scope\n").1,
            Some("lxc web".into())
        );
        assert_eq!(parse_cgroup("0::/\n"), (None, None));
        assert_eq!(parse_cgroup(""), (None, None));
        assert_eq!(parse_cgroup("garbage"), (None, None));
    }

    #[test]
    fn uid_and_homes() {
        assert_eq!(
            parse_uid("Name:\tx\nUid:\t1001\t1001\t1001\t1001\n"),
            Some(1001)
        );
        assert_eq!(parse_uid("Name:\tx\n"), None);
        assert!(same_home("/srv/a/.pm2/", "/srv/a/.pm2"));
        assert!(!same_home("/srv/a/.pm2", "/srv/b/.pm2"));
    }

    fn ident(pm2: Option<Pm2Role>) -> Identity {
        Identity {
            pid: 7,
            start: 1,
            uid: Some(0),
            cmd: "node server.js".into(),
            pm2,
            unit: Some("web.service".into()),
            container: None,
        }
    }

    #[test]
    fn relations() {
        let home = "/h/.pm2";
        assert_eq!(ident(None).relation(home), Relation::NotPm2);
        let d = |h: &str| Some(Pm2Role::Daemon { pm2_home: h.into() });
        assert_eq!(ident(d(home)).relation(home), Relation::ThisDaemon);
        assert_eq!(ident(d("/o")).relation(home), Relation::OtherDaemon);
        let app = |h: &str| {
            Some(Pm2Role::App {
                pm2_home: h.into(),
                name: Some("api".into()),
                pm_id: Some(1),
                generation: Some(0),
            })
        };
        assert_eq!(
            ident(app("/h/.pm2/")).relation(home),
            Relation::ThisDaemonsApp
        );
        let other = ident(app("/o"));
        assert_eq!(other.relation(home), Relation::OtherDaemonsApp);
        assert_eq!(
            other.describe(),
            "pid 7 (app api:1 of the PM2 daemon at PM2_HOME=/o, systemd unit web.service, uid 0)"
        );
        assert_eq!(
            ident(None).describe(),
            "pid 7 (`node server.js`, systemd unit web.service, uid 0)"
        );
    }

    /// A real listener of this test process is found, with this process as its holder.
    #[test]
    fn finds_a_real_listener_and_its_holder() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let want = Addr::parse(&format!("0.0.0.0:{port}")).unwrap();
        let scan = who_holds(Path::new("/proc"), Transport::Tcp, &want).unwrap();
        let me = std::process::id() as i32;
        let h = scan
            .holds
            .iter()
            .find(|h| h.port == Some(port))
            .unwrap_or_else(|| panic!("port {port} not found: {scan:?}"));
        assert_eq!(h.addr, format!("127.0.0.1:{port}"));
        assert!(h.holders.iter().any(|i| i.pid == me), "{h:?}");
        // Skipping the holder leaves nothing.
        let skip: HashSet<i32> = [me].into_iter().collect();
        let scan = scan_port(port, &skip);
        assert!(scan.holds.is_empty(), "{scan:?}");
        // UDP on the same port is another address.
        let udp = who_holds(Path::new("/proc"), Transport::Udp, &want).unwrap();
        assert!(
            udp.holds
                .iter()
                .all(|h| h.holders.iter().all(|i| i.pid != me)),
            "{udp:?}"
        );
        drop(l);
    }

    fn scan_port(port: u16, skip: &HashSet<i32>) -> HostScan {
        scan(Path::new("/proc"), |l| l.port == Some(port), skip).unwrap()
    }

    /// A bound unix socket path is found by its path.
    #[test]
    fn finds_a_unix_socket_path() {
        let dir = std::env::temp_dir().join(format!("p2t-holders-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.sock");
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let want = Addr::Unix(path.to_str().unwrap().to_owned());
        let scan = who_holds(Path::new("/proc"), Transport::Unix, &want).unwrap();
        let me = std::process::id() as i32;
        assert!(
            scan.holds
                .iter()
                .any(|h| h.proto == "unix" && h.holders.iter().any(|i| i.pid == me)),
            "{scan:?}"
        );
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
