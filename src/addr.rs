//! Addresses a process can hold (a TCP or UDP port on an IP address, a unix socket path or
//! abstract name), read from text, and which of them get in each other's way.
//!
//! Pure functions over strings: the process watcher writes addresses as `127.0.0.1:4211`,
//! `[::]:80`, `/run/app.sock`, `@abstract`; apps name them in their errors as
//! `listen EADDRINUSE: address already in use :::4000` (Node), `listen tcp :8080: bind:
//! address already in use` (Go), `/tmp/app.sock`. Two addresses conflict when binding one
//! fails while the other is held: the same transport and port on overlapping IP addresses
//! (a wildcard overlaps every address of its family, and `::` also the IPv4 ones), or the
//! same unix path or abstract name.

use std::net::IpAddr;

/// The transport of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Unix,
}

impl Transport {
    /// From the watcher's protocol names (`tcp`, `tcp6`, `udp`, `udp6`, `unix`).
    pub fn from_proto(proto: &str) -> Option<Transport> {
        match proto {
            "tcp" | "tcp6" => Some(Transport::Tcp),
            "udp" | "udp6" => Some(Transport::Udp),
            "unix" => Some(Transport::Unix),
            _ => None,
        }
    }
}

/// An address, as far as conflicts go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// A port; `ip` is `None` when the text named only the port (`:8080`).
    Inet { ip: Option<IpAddr>, port: u16 },
    /// A unix socket path (starts with `/`) or abstract name (starts with `@`).
    Unix(String),
}

impl Addr {
    /// Read an address as the watcher writes it (`127.0.0.1:4211`, `[::1]:80`, `:::80`,
    /// `*:80`, `:80`, `/run/x.sock`, `@name`, and `unix:/run/x.sock` as exit events list
    /// held paths). `None` for anything else.
    pub fn parse(text: &str) -> Option<Addr> {
        let text = text.trim();
        let text = text.strip_prefix("unix:").unwrap_or(text);
        if text.starts_with('/') || (text.starts_with('@') && text.len() > 1) {
            return Some(Addr::Unix(text.to_owned()));
        }
        let (host, port) = text.rsplit_once(':')?;
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port: u16 = port.parse().ok()?;
        let host = host.strip_prefix('[').unwrap_or(host);
        let host = host.strip_suffix(']').unwrap_or(host);
        let ip = match host {
            "" | "*" => None,
            // Node prints the IPv6 wildcard bare: `:::4000` leaves `::` here.
            h => Some(h.parse::<IpAddr>().ok()?),
        };
        Some(Addr::Inet { ip, port })
    }

    /// The port, for TCP/UDP addresses.
    pub fn port(&self) -> Option<u16> {
        match self {
            Addr::Inet { port, .. } => Some(*port),
            Addr::Unix(_) => None,
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Addr::Unix(_))
    }

    /// Whether binding one of the two fails while the other is held (same transport is the
    /// caller's business: TCP and UDP ports never conflict).
    pub fn conflicts(&self, other: &Addr) -> bool {
        match (self, other) {
            (Addr::Unix(a), Addr::Unix(b)) => a == b,
            (Addr::Inet { ip: a, port: p }, Addr::Inet { ip: b, port: q }) => {
                p == q && ips_overlap(*a, *b)
            }
            _ => false,
        }
    }
}

/// An IPv4 address an IPv6 one maps (`::ffff:a.b.c.d`).
fn v4_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn ips_overlap(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return true; // an unnamed address: the port alone decides
    };
    let (a, b) = (v4_of(a), v4_of(b));
    if a == b {
        return true;
    }
    // `::` (dual stack, Linux's default) overlaps everything; `0.0.0.0` every IPv4 address.
    let wild = |x: IpAddr, y: IpAddr| match x {
        IpAddr::V6(v6) => v6.is_unspecified(),
        IpAddr::V4(v4) => v4.is_unspecified() && y.is_ipv4(),
    };
    wild(a, b) || wild(b, a)
}

/// The addresses a line of an app's output names, when it says an address was in use.
/// Node names the address (`listen EADDRINUSE: address already in use 127.0.0.1:4000`),
/// Go too (`listen tcp :8080: bind: address already in use`); Python does not
/// (`OSError: [Errno 98] Address already in use`): then the list is empty.
pub fn named_in(line: &str) -> Vec<Addr> {
    let mut out = Vec::new();
    if !says_in_use(line) {
        return out;
    }
    // Node ends the line with the address, which may be a path with spaces.
    if let Some((_, rest)) = line.split_once("already in use ") {
        let rest = rest.trim();
        if rest.starts_with('/') && !rest.contains(':') {
            out.push(Addr::Unix(rest.to_owned()));
            return out;
        }
    }
    for word in line.split(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == ',') {
        let w = word.trim_end_matches(['.', ')', ';']);
        let w = w.strip_prefix('(').unwrap_or(w);
        // Go: `tcp :8080:` -> `:8080`.
        let w = if w.len() > 1 && w.ends_with(':') && !w.ends_with("::") {
            &w[..w.len() - 1]
        } else {
            w
        };
        if w.is_empty() {
            continue;
        }
        let addr = if w.starts_with('/') {
            // Not a place in a stack trace (`/srv/app/server.js:12:5`).
            if w.contains(':') {
                None
            } else {
                Addr::parse(w)
            }
        } else if w.contains(':') {
            Addr::parse(w)
        } else {
            None
        };
        if let Some(a) = addr {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    if out.is_empty() {
        // A port alone, after `on` or `port` (`listen on 4000 failed: EADDRINUSE`).
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if ["on", "port"].contains(&pair[0].to_ascii_lowercase().as_str()) {
                if let Ok(port) = pair[1].trim_end_matches(['.', ')', ';']).parse::<u16>() {
                    if port > 0 {
                        out.push(Addr::Inet { ip: None, port });
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Words an app uses to say an address was taken, in any of the usual runtimes.
pub fn says_in_use(line: &str) -> bool {
    line.contains("EADDRINUSE")
        || line.contains("address already in use")
        || line.contains("Address already in use")
        || line.contains("Address in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_what_the_watcher_and_apps_write() {
        assert_eq!(
            a("127.0.0.1:4211"),
            Addr::Inet {
                ip: Some("127.0.0.1".parse().unwrap()),
                port: 4211
            }
        );
        assert_eq!(a("[::1]:80").port(), Some(80));
        assert_eq!(
            a(":::4000"),
            Addr::Inet {
                ip: Some("::".parse().unwrap()),
                port: 4000
            }
        );
        assert_eq!(
            a(":8080"),
            Addr::Inet {
                ip: None,
                port: 8080
            }
        );
        assert_eq!(a("*:53"), Addr::Inet { ip: None, port: 53 });
        assert_eq!(a("unix:/run/x.sock"), Addr::Unix("/run/x.sock".into()));
        assert_eq!(a("@abstract"), Addr::Unix("@abstract".into()));
        assert!(Addr::parse("web:0").is_none());
        assert!(Addr::parse("host:99999").is_none());
        assert!(Addr::parse("nonsense").is_none());
        assert!(Addr::parse("@").is_none());
    }

    #[test]
    fn overlapping_addresses_conflict() {
        assert!(a("127.0.0.1:4000").conflicts(&a("0.0.0.0:4000")));
        assert!(a(":::4000").conflicts(&a("127.0.0.1:4000")));
        assert!(a("[::ffff:127.0.0.1]:4000").conflicts(&a("127.0.0.1:4000")));
        assert!(a(":4000").conflicts(&a("[::1]:4000")));
        assert!(!a("127.0.0.1:4000").conflicts(&a("127.0.0.2:4000")));
        assert!(!a("0.0.0.0:4000").conflicts(&a("[::1]:4000")));
        assert!(!a("127.0.0.1:4000").conflicts(&a("127.0.0.1:4001")));
        assert!(a("/tmp/a.sock").conflicts(&a("unix:/tmp/a.sock")));
        assert!(!a("/tmp/a.sock").conflicts(&a("/tmp/b.sock")));
        assert!(!a("/tmp/a.sock").conflicts(&a("127.0.0.1:4000")));
    }

    #[test]
    fn addresses_named_in_errors() {
        assert_eq!(
            named_in("Error: listen EADDRINUSE: address already in use :::4000"),
            vec![a(":::4000")]
        );
        assert_eq!(
            named_in("Error: listen EADDRINUSE: address already in use 127.0.0.1:33049"),
            vec![a("127.0.0.1:33049")]
        );
        assert_eq!(
            named_in("Error: listen EADDRINUSE: address already in use /tmp/x y/app.sock"),
            vec![a("/tmp/x y/app.sock")]
        );
        assert_eq!(
            named_in("listen tcp :8080: bind: address already in use"),
            vec![a(":8080")]
        );
        assert_eq!(
            named_in("slow-drain-child[child pid=9182]: listen on 42913 failed: EADDRINUSE"),
            vec![a(":42913")]
        );
        assert_eq!(named_in("EADDRINUSE on port 8080."), vec![a(":8080")]);
        assert!(named_in("OSError: [Errno 98] Address already in use").is_empty());
        assert!(named_in("    at Server.listen (/srv/app/server.js:12:5)").is_empty());
        assert!(named_in("ENOENT: no such file or directory, open '/srv/x.json'").is_empty());
        assert!(says_in_use("OSError: [Errno 98] Address already in use"));
        assert!(!says_in_use("TypeError: x is undefined"));
    }
}
