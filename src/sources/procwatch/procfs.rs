//! Readers and parsers for the /proc files the watcher uses. The parsers are pure functions
//! over text or bytes (unit-tested); the readers bound how much they read.

use crate::event::proc::Proto;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// The fields of `/proc/<pid>/stat` the watcher uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) pid: i32,
    pub(crate) comm: String,
    pub(crate) state: char,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) session: i32,
    /// Field 9: the kernel's task flags (`PF_*`).
    pub(crate) flags: u64,
    pub(crate) utime: u64,
    pub(crate) stime: u64,
    /// Field 22: start time in clock ticks since boot.
    pub(crate) starttime: u64,
    /// Field 52: the wait status; meaningful only while the process is a zombie (the kernel
    /// shows 0 otherwise, or when the reader may not see it).
    pub(crate) exit_code: Option<i32>,
}

/// Parse the text of `/proc/<pid>/stat`. The command name is in parentheses and may itself
/// contain spaces and parentheses, so the fields start after the *last* `)`.
pub(crate) fn parse_stat(text: &str) -> Result<Stat, String> {
    let open = text.find('(').ok_or("no '(' before the command name")?;
    let close = text.rfind(')').ok_or("no ')' after the command name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let pid: i32 = text[..open]
        .trim()
        .parse()
        .map_err(|_| format!("bad pid {:?}", text[..open].trim()))?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    // rest[0] is field 3 (state); field n is rest[n - 3].
    let field = |n: usize| -> Result<&str, String> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| format!("stat has no field {n} (only {})", rest.len() + 2))
    };
    let num = |n: usize| -> Result<i64, String> {
        let f = field(n)?;
        f.parse::<i64>()
            .map_err(|_| format!("stat field {n} is not a number: {f:?}"))
    };
    let state = field(3)?.chars().next().ok_or("empty state")?;
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: num(4)? as i32,
        pgrp: num(5)? as i32,
        session: num(6)? as i32,
        flags: num(9)? as u64,
        utime: num(14)? as u64,
        stime: num(15)? as u64,
        starttime: num(22)? as u64,
        exit_code: if rest.len() >= 50 {
            num(52).ok().map(|v| v as i32)
        } else {
            None
        },
    })
}

/// `PF_EXITING` (include/linux/sched.h): set as `do_exit` begins, before the process's
/// files (its listening sockets among them) are closed.
const PF_EXITING: u64 = 0x4;

impl Stat {
    /// Its exit has begun: `do_exit` is closing its files, or it is a zombie already.
    pub(crate) fn exiting(&self) -> bool {
        self.flags & PF_EXITING != 0 || matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Read and parse `/proc/<pid>/stat`; `None` if the process is gone or unreadable.
pub(crate) fn read_stat(proc_root: &Path, pid: i32) -> Option<Stat> {
    let mut buf = [0u8; 1024];
    let n = read_small(&proc_root.join(pid.to_string()).join("stat"), &mut buf)?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    parse_stat(text).ok()
}

/// Read a small file into `buf` in one go (for /proc files that fit); `None` on error.
fn read_small(path: &Path, buf: &mut [u8]) -> Option<usize> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some(n)
}

/// Read at most `limit` bytes of a file. Returns the bytes and whether the file was longer.
pub(crate) fn read_bounded(path: &Path, limit: usize) -> std::io::Result<(Vec<u8>, bool)> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut out)?;
    let truncated = out.len() > limit;
    out.truncate(limit);
    Ok((out, truncated))
}

/// Most environ bytes the watcher reads per process.
pub(crate) const ENVIRON_LIMIT: usize = 1 << 20;
/// Most cmdline bytes the watcher reads per process.
pub(crate) const CMDLINE_LIMIT: usize = 16 << 10;

/// The pm2 keys of an environment block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pm2Env {
    pub(crate) pm_id: Option<u64>,
    pub(crate) name: Option<String>,
    pub(crate) pm2_home: Option<String>,
    pub(crate) unique_id: Option<String>,
    pub(crate) restart_time: Option<u64>,
}

/// Pick pm2's keys out of an environ block (`KEY=value\0...`) without copying the rest.
///
/// A cluster-mode worker is forked by the daemon with its whole pm2 environment in one
/// variable, `pm2_env=<JSON>` (lib/God/ClusterMode.js), and `PM2_HOME` beside it: the keys
/// are read from that JSON when they are not at top level.
pub(crate) fn parse_pm2_env(block: &[u8]) -> Pm2Env {
    let mut e = Pm2Env::default();
    let mut cluster: Option<&[u8]> = None;
    for entry in block.split(|&b| b == 0) {
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (k, v) = (&entry[..eq], &entry[eq + 1..]);
        let text = || String::from_utf8_lossy(v).into_owned();
        match k {
            b"pm_id" => e.pm_id = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
            b"name" => e.name = Some(text()),
            b"PM2_HOME" => e.pm2_home = Some(text()),
            b"unique_id" => e.unique_id = Some(text()),
            b"restart_time" => {
                e.restart_time = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok())
            }
            b"pm2_env" => cluster = Some(v),
            _ => {}
        }
    }
    if let Some(json) = cluster.filter(|_| e.pm_id.is_none()) {
        cluster_worker_env(json, &mut e);
    }
    e
}

/// Fill in pm2's keys from a cluster worker's `pm2_env` JSON.
fn cluster_worker_env(json: &[u8], e: &mut Pm2Env) {
    #[derive(serde::Deserialize)]
    struct Keys {
        pm_id: Option<serde_json::Value>,
        name: Option<String>,
        unique_id: Option<String>,
        restart_time: Option<u64>,
    }
    let Ok(k) = serde_json::from_slice::<Keys>(json) else {
        return;
    };
    e.pm_id = match k.pm_id {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    if e.pm_id.is_none() {
        return;
    }
    e.name = e.name.take().or(k.name);
    e.unique_id = e.unique_id.take().or(k.unique_id);
    e.restart_time = e.restart_time.or(k.restart_time);
}

/// Split an environ block into (key, value) pairs, in order. Entries without `=` are kept
/// with an empty value.
pub(crate) fn parse_environ(block: &[u8]) -> Vec<(String, String)> {
    block
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.iter().position(|&b| b == b'=') {
            Some(eq) => (
                String::from_utf8_lossy(&entry[..eq]).into_owned(),
                String::from_utf8_lossy(&entry[eq + 1..]).into_owned(),
            ),
            None => (String::from_utf8_lossy(entry).into_owned(), String::new()),
        })
        .collect()
}

/// Split a cmdline block into arguments.
pub(crate) fn parse_cmdline(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

pub(crate) fn read_cmdline(proc_root: &Path, pid: i32) -> Option<Vec<String>> {
    let (b, _) = read_bounded(
        &proc_root.join(pid.to_string()).join("cmdline"),
        CMDLINE_LIMIT,
    )
    .ok()?;
    Some(parse_cmdline(&b))
}

pub(crate) fn read_environ(proc_root: &Path, pid: i32) -> std::io::Result<(Vec<u8>, bool)> {
    read_bounded(
        &proc_root.join(pid.to_string()).join("environ"),
        ENVIRON_LIMIT,
    )
}

/// A socket from /proc/net/{tcp,tcp6,udp,udp6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InetSock {
    pub(crate) proto: Proto,
    pub(crate) addr: std::net::IpAddr,
    pub(crate) port: u16,
    /// Kernel TCP state (0x0A = LISTEN; for UDP 0x07 = unconnected).
    pub(crate) state: u8,
    pub(crate) inode: u64,
}

impl InetSock {
    /// Listening (TCP) or bound and unconnected (UDP).
    pub(crate) fn is_listening(&self) -> bool {
        match self.proto {
            Proto::Tcp | Proto::Tcp6 => self.state == 0x0A,
            Proto::Udp | Proto::Udp6 => self.state == 0x07 && self.port != 0,
            Proto::Unix => false,
        }
    }

    pub(crate) fn addr_string(&self) -> String {
        match self.addr {
            std::net::IpAddr::V4(a) => format!("{a}:{}", self.port),
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }
}

/// Parse `ADDR:PORT` as printed in /proc/net/tcp*: the address is the 32-bit words of the
/// network-order address printed in host order (`%08X` each), the port plain hex.
fn parse_hex_addr(s: &str, v6: bool) -> Option<(std::net::IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    if !a.is_ascii() {
        return None;
    }
    let port = u16::from_str_radix(p, 16).ok()?;
    if v6 {
        if a.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            let w = u32::from_str_radix(&a[i * 8..i * 8 + 8], 16).ok()?;
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Some((std::net::IpAddr::V6(Ipv6Addr::from(bytes)), port))
    } else {
        if a.len() != 8 {
            return None;
        }
        let w = u32::from_str_radix(a, 16).ok()?;
        Some((std::net::IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())), port))
    }
}

/// Parse one line of /proc/net/{tcp,tcp6,udp,udp6}. `None` for the header or a line that
/// does not have the expected shape.
pub(crate) fn parse_inet_line(proto: Proto, line: &str) -> Option<InetSock> {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    if f.len() < 10 || !f[0].ends_with(':') {
        return None;
    }
    let v6 = matches!(proto, Proto::Tcp6 | Proto::Udp6);
    let (addr, port) = parse_hex_addr(f[1], v6)?;
    let state = u8::from_str_radix(f[3], 16).ok()?;
    let inode = f[9].parse().ok()?;
    Some(InetSock {
        proto,
        addr,
        port,
        state,
        inode,
    })
}

/// A socket from /proc/net/unix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnixSock {
    pub(crate) flags: u32,
    /// 1 = stream, 2 = dgram, 5 = seqpacket.
    pub(crate) typ: u16,
    /// 1 = unconnected, 3 = connected.
    pub(crate) state: u8,
    pub(crate) inode: u64,
    /// Bound path; abstract names start with `@`.
    pub(crate) path: Option<String>,
}

/// `__SO_ACCEPTCON`: the socket is listening.
const SO_ACCEPTCON: u32 = 1 << 16;

impl UnixSock {
    /// Bound to a path and listening (stream/seqpacket) or unconnected (dgram).
    pub(crate) fn is_bound_listener(&self) -> bool {
        self.path.is_some()
            && (self.flags & SO_ACCEPTCON != 0 || (self.typ == 2 && self.state == 1))
    }
}

/// Parse one line of /proc/net/unix: `Num RefCount Protocol Flags Type St Inode [Path]`.
pub(crate) fn parse_unix_line(line: &str) -> Option<UnixSock> {
    let mut it = line.split_ascii_whitespace();
    let num = it.next()?;
    if !num.ends_with(':') {
        return None;
    }
    let _refcount = it.next()?;
    let _protocol = it.next()?;
    let flags = u32::from_str_radix(it.next()?, 16).ok()?;
    let typ = u16::from_str_radix(it.next()?, 16).ok()?;
    let state = u8::from_str_radix(it.next()?, 16).ok()?;
    let inode = it.next()?.parse().ok()?;
    // The path is the rest of the line (it may contain spaces).
    let path = {
        let mut rest = line;
        for _ in 0..7 {
            rest = rest.trim_start();
            let end = rest
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            rest = &rest[end..];
        }
        let p = rest.trim_start().trim_end_matches('\n');
        if p.is_empty() {
            None
        } else {
            Some(p.to_string())
        }
    };
    Some(UnixSock {
        flags,
        typ,
        state,
        inode,
        path,
    })
}

/// If a `/proc/<pid>/fd/N` link target is `socket:[INODE]`, the inode.
pub(crate) fn socket_inode(link: &[u8]) -> Option<u64> {
    let s = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The socket inodes a process holds open. Errors (permission, gone) give an empty list and
/// the error text.
pub(crate) fn socket_inodes(proc_root: &Path, pid: i32) -> Result<Vec<u64>, String> {
    use std::os::unix::ffi::OsStrExt;
    let dir = proc_root.join(pid.to_string()).join("fd");
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for ent in rd.flatten() {
        if let Ok(target) = std::fs::read_link(ent.path()) {
            if let Some(ino) = socket_inode(target.as_os_str().as_bytes()) {
                out.push(ino);
            }
        }
    }
    Ok(out)
}

/// The pids in /proc (numeric directory names), appended to `out`.
pub(crate) fn list_pids(proc_root: &Path, out: &mut Vec<i32>) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for ent in std::fs::read_dir(proc_root)?.flatten() {
        let name = ent.file_name();
        let b = name.as_bytes();
        if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
            if let Ok(pid) = std::str::from_utf8(b).unwrap_or("").parse::<i32>() {
                out.push(pid);
            }
        }
    }
    Ok(())
}

/// The network namespace of a process (`/proc/<pid>/ns/net` link), for grouping socket-table reads.
pub(crate) fn net_ns(proc_root: &Path, pid: i32) -> Option<PathBuf> {
    std::fs::read_link(proc_root.join(pid.to_string()).join("ns/net")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm() {
        // A comm with spaces and parentheses, as `prctl(PR_SET_NAME)` allows.
        let line = "4242 (my (evil) a) b) S 17 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 11 0 123456 \
                    1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "my (evil) a) b");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 17);
        assert_eq!(s.pgrp, 4242);
        assert_eq!(s.session, 4242);
        assert_eq!(s.utime, 7);
        assert_eq!(s.stime, 3);
        assert_eq!(s.starttime, 123456);
        assert_eq!(s.exit_code, Some(0));
        assert_eq!(s.flags, 4194560);
        assert!(!s.exiting());
        // The same process once `do_exit` began (PF_EXITING), and once a zombie.
        let s = parse_stat(&line.replace(" 4194560 ", " 4194564 ")).unwrap();
        assert!(s.exiting());
        let s = parse_stat(&line.replace(") S 17", ") Z 17")).unwrap();
        assert!(s.exiting());
    }

    #[test]
    fn stat_zombie_exit_code_and_short_line() {
        let mut f: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        f[0] = "Z".into(); // field 3
        f[19] = "999".into(); // field 22
        f[49] = "768".into(); // field 52
        let line = format!("7 (sh) {}", f.join(" "));
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.state, 'Z');
        assert_eq!(s.starttime, 999);
        assert_eq!(s.exit_code, Some(768));
        assert!(parse_stat("7 (sh) S 1 2").is_err());
        assert!(parse_stat("garbage").is_err());
        assert!(parse_stat("x (sh) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20").is_err());
    }

    #[test]
    fn real_self_stat() {
        let s = read_stat(Path::new("/proc"), std::process::id() as i32).unwrap();
        assert_eq!(s.pid, std::process::id() as i32);
        assert!(s.starttime > 0);
    }

    #[test]
    fn environ_keys() {
        let block = b"PATH=/bin\0pm_id=3\0name=web app\0PM2_HOME=/tmp/x/home\0unique_id=8092fa39\0\
                      restart_time=12\0EMPTY=\0NOEQ\0A=b=c\0";
        let e = parse_pm2_env(block);
        assert_eq!(e.pm_id, Some(3));
        assert_eq!(e.name.as_deref(), Some("web app"));
        assert_eq!(e.pm2_home.as_deref(), Some("/tmp/x/home"));
        assert_eq!(e.unique_id.as_deref(), Some("8092fa39"));
        assert_eq!(e.restart_time, Some(12));
        let all = parse_environ(block);
        assert_eq!(all.len(), 9);
        assert_eq!(all[7], ("NOEQ".to_string(), String::new()));
        assert_eq!(all[8], ("A".to_string(), "b=c".to_string()));
        assert_eq!(parse_pm2_env(b"pm_id=x\0"), Pm2Env::default());
        // A cluster worker: everything in one JSON variable, PM2_HOME beside it.
        let worker =
            b"PM2_HOME=/h\0NODE_UNIQUE_ID=1\0pm2_env={\"name\":\"web\",\"env\":{\"A\":\"1\"},\
                       \"pm_id\":1,\"restart_time\":3,\"unique_id\":\"u-1\"}\0";
        let w = parse_pm2_env(worker);
        assert_eq!(
            (
                w.pm_id,
                w.name.as_deref(),
                w.restart_time,
                w.pm2_home.as_deref()
            ),
            (Some(1), Some("web"), Some(3), Some("/h"))
        );
        assert_eq!(w.unique_id.as_deref(), Some("u-1"));
        // Not JSON, or no pm_id: nothing is made up.
        assert_eq!(parse_pm2_env(b"pm2_env={oops\0").pm_id, None);
        assert_eq!(
            parse_pm2_env(b"pm2_env={\"name\":\"web\"}\0"),
            Pm2Env::default()
        );
        assert_eq!(parse_pm2_env(b""), Pm2Env::default());
    }

    #[test]
    fn cmdline_split() {
        assert_eq!(
            parse_cmdline(b"node\0/a b.js\0--child\0"),
            vec!["node", "/a b.js", "--child"]
        );
        assert!(parse_cmdline(b"").is_empty());
        assert_eq!(
            parse_cmdline(b"PM2 v7.0.4: God Daemon (/h)"),
            vec!["PM2 v7.0.4: God Daemon (/h)"]
        );
    }

    #[test]
    fn inet_lines() {
        let l = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 55411 1 00000000eb9f404b 100 0 0 10 0";
        let s = parse_inet_line(Proto::Tcp, l).unwrap();
        assert_eq!(s.addr_string(), "127.0.0.1:8080");
        assert_eq!(s.inode, 55411);
        assert!(s.is_listening());
        let est = "   1: 0100007F:1F90 0100007F:C000 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0";
        assert!(!parse_inet_line(Proto::Tcp, est).unwrap().is_listening());
        assert!(parse_inet_line(
            Proto::Tcp,
            "  sl  local_address rem_address   st tx_queue rx_queue"
        )
        .is_none());
        // ::1 port 4211, listening.
        let v6 = "   0: 00000000000000000000000001000000:1073 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 9001 1 0 100 0 0 10 0";
        let s = parse_inet_line(Proto::Tcp6, v6).unwrap();
        assert_eq!(s.addr_string(), "[::1]:4211");
        assert_eq!(s.port, 4211);
        // [::]:53 udp6, unconnected.
        let u6 = "  100: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0 0";
        let s = parse_inet_line(Proto::Udp6, u6).unwrap();
        assert_eq!(s.addr_string(), "[::]:53");
        assert!(s.is_listening());
        // v4-mapped ::ffff:127.0.0.1
        let m = "   0: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 0 0 0 0 0 1234 1";
        let s = parse_inet_line(Proto::Tcp6, m).unwrap();
        assert_eq!(s.addr_string(), "[::ffff:127.0.0.1]:80");
        assert!(parse_inet_line(
            Proto::Tcp,
            "   0: 0100007F1F90 00000000:0000 0A 0 0 0 0 0 1 1"
        )
        .is_none());
    }

    #[test]
    fn unix_lines() {
        let l = "00000000cd7e52a2: 00000002 00000000 00010000 0001 01 54052 /tmp/p2t x/pub.sock";
        let s = parse_unix_line(l).unwrap();
        assert_eq!(s.inode, 54052);
        assert_eq!(s.path.as_deref(), Some("/tmp/p2t x/pub.sock"));
        assert!(s.is_bound_listener());
        let conn = "00000000a920e814: 00000003 00000000 00000000 0001 03 56457";
        let s = parse_unix_line(conn).unwrap();
        assert_eq!(s.path, None);
        assert!(!s.is_bound_listener());
        let accepted = "00000000a920e814: 00000003 00000000 00000000 0001 03 56458 /run/x.sock";
        assert!(!parse_unix_line(accepted).unwrap().is_bound_listener());
        let dgram = "0000000000000000: 00000002 00000000 00000000 0002 01 11 @abstract";
        assert!(parse_unix_line(dgram).unwrap().is_bound_listener());
        assert!(
            parse_unix_line("Num       RefCount Protocol Flags    Type St Inode Path").is_none()
        );
    }

    #[test]
    fn fd_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }
}
