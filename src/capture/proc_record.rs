//! A process-watcher record (`"type":"proc"`) read into its [`ProcEvent`] from the record's
//! validated text by hand, as the reader's fast path reads the other event types: without
//! serde's buffering of internally tagged types (`kind`, `how`, `from`), without parsing
//! again text the reader has validated (a snapshot names a dozen processes and sockets).
//!
//! Members are first read in the order pm2-trace writes them ([`InOrder`]: each key is
//! compared where the next member starts, nothing is looked up), and when the text is not
//! so written (another order, whitespace, unknown or repeated members, escaped keys) by
//! name ([`Fields`]). Each type is built with a struct literal, so a field added, removed
//! or retyped fails to compile here. Every reading is exact or declines: a value it does
//! not take as written (not the JSON type expected, a number that is not a plain whole
//! number in range, more members than [`Fields`] holds) is decoded by serde from that
//! value's own text, which is what serde's derived decoding of the record does with it. So
//! the event is always the one `Stamped`'s own `Deserialize` gives (held to it by the
//! reader's tests).

use super::reader::{plain_str, Fields};
use crate::event::proc::{
    AppRef, AttrHow, EnvSnap, EnvVar, ExitStatus, ProcSnap, Proto, Snapshot, SnapshotReason,
    SocketHold, StatusFrom, Timing, Via, Who,
};
use crate::event::ProcEvent;
use crate::wire::json::scan::{plain_u64, Doc};
use serde::de::DeserializeOwned;

/// Where a type's reading finds its members.
trait Members<'a> {
    /// Member `name`'s value text; None when it is absent (for [`InOrder`]: when it is not
    /// the next member).
    fn take(&mut self, name: &str) -> Option<&'a str>;
    /// The document the values are slices of.
    fn doc(&self) -> Doc<'a>;
}

/// Members found by name, in any order.
impl<'a> Members<'a> for &Fields<'a> {
    fn take(&mut self, name: &str) -> Option<&'a str> {
        self.raw(name)
    }
    fn doc(&self) -> Doc<'a> {
        Fields::doc(self)
    }
}

/// The members of an object written compactly, read in the order they are asked for. When
/// every member was taken in turn and the object ends there ([`InOrder::finished`]), no key
/// is repeated, unknown or escaped: what was read is what a search by name finds.
struct InOrder<'a> {
    doc: Doc<'a>,
    /// Where the next member (or the comma before it) starts.
    i: usize,
    /// Where the object's closing brace is.
    end: usize,
    first: bool,
}

impl<'a> InOrder<'a> {
    /// The members of object `raw`, a slice of `doc`'s text.
    fn new(doc: Doc<'a>, raw: &'a str) -> Option<InOrder<'a>> {
        if !raw.starts_with('{') || !raw.ends_with('}') {
            return None;
        }
        let at = doc.offset(raw);
        Some(InOrder {
            doc,
            i: at + 1,
            end: at + raw.len() - 1,
            first: true,
        })
    }

    /// Whether every member was taken.
    fn finished(&self) -> bool {
        self.i == self.end
    }
}

impl<'a> Members<'a> for InOrder<'a> {
    fn take(&mut self, name: &str) -> Option<&'a str> {
        let text = self.doc.text();
        let b = text.as_bytes();
        let mut i = self.i;
        if !self.first {
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
        let k = name.as_bytes();
        let key_end = i + 1 + k.len();
        if b.get(i) != Some(&b'"')
            || b.get(i + 1..key_end) != Some(k)
            || b.get(key_end..key_end + 2) != Some(b"\":")
        {
            return None;
        }
        let v = key_end + 2;
        let v_end = self.doc.skip(v);
        if v_end > self.end {
            return None;
        }
        let value = text.get(v..v_end)?;
        self.i = v_end;
        self.first = false;
        Some(value)
    }
    fn doc(&self) -> Doc<'a> {
        self.doc
    }
}

/// The event of a `proc` record `text` whose members are `f`; None when the record is not
/// one (serde then decides).
pub(super) fn proc_event<'a>(f: &Fields<'a>, text: &'a str) -> Option<ProcEvent> {
    let kind = f.str("kind")?;
    if let Some(mut m) = InOrder::new(f.doc(), text) {
        // As pm2-trace writes a record: its instant and types first.
        if m.take("t").is_some() && m.take("type").is_some() && m.take("kind").is_some() {
            if let Some(ev) = variant(&kind, &mut m) {
                if m.finished() {
                    return Some(ev);
                }
            }
        }
    }
    variant(&kind, &mut &*f)
}

fn variant<'a>(kind: &str, m: &mut dyn Members<'a>) -> Option<ProcEvent> {
    let d = m.doc();
    Some(match kind {
        "tracked" => ProcEvent::Tracked {
            who: object(d, m.take("who"), who)?,
            via: via(m.take("via"))?,
            timing: object(d, m.take("timing"), timing)?,
        },
        "fork" => ProcEvent::Fork {
            parent: int32(m.take("parent"))?,
            who: object(d, m.take("who"), who)?,
            via: via(m.take("via"))?,
            timing: object(d, m.take("timing"), timing)?,
        },
        "exec" => ProcEvent::Exec {
            who: object(d, m.take("who"), who)?,
            via: via(m.take("via"))?,
            timing: object(d, m.take("timing"), timing)?,
        },
        "attributed" => ProcEvent::Attributed {
            who: object(d, m.take("who"), who)?,
        },
        "exit" => ProcEvent::Exit {
            who: object(d, m.take("who"), who)?,
            status: object(d, m.take("status"), exit_status)?,
            status_from: opt(m.take("status_from"), |r| {
                unit(r, |s| {
                    Some(match s {
                        "netlink" => StatusFrom::Netlink,
                        "pidfd_info" => StatusFrom::PidfdInfo,
                        "zombie_stat" => StatusFrom::ZombieStat,
                        _ => return None,
                    })
                })
            })?,
            via: via(m.take("via"))?,
            timing: object(d, m.take("timing"), timing)?,
            lived_ns: opt(m.take("lived_ns"), whole)?,
            held: list(d, m.take("held"), string)?,
            in_tree: opt(m.take("in_tree"), boolean)?,
        },
        // The snapshot's members are the record's own (its `t`, `type` and `kind` are
        // members it does not have, which serde ignores too).
        "snapshot" => ProcEvent::Snapshot(snapshot(m)?),
        "mode" => ProcEvent::Mode {
            report: serde(or_null(m.take("report")))?,
        },
        "lost" => ProcEvent::Lost {
            why: string(or_null(m.take("why")))?,
        },
        _ => return None,
    })
}

fn snapshot<'a>(m: &mut dyn Members<'a>) -> Option<Snapshot> {
    let d = m.doc();
    Some(Snapshot {
        reason: object(d, m.take("reason"), snapshot_reason)?,
        processes: list(d, m.take("processes"), |r| object(d, Some(r), proc_snap))?,
        sockets: list(d, m.take("sockets"), |r| object(d, Some(r), socket_hold))?,
        env: list(d, m.take("env"), |r| object(d, Some(r), env_snap))?,
        notes: list(d, m.take("notes"), string)?,
        cost_us: whole(or_null(m.take("cost_us")))?,
        // Declared `#[serde(default)]`: absent is empty (and pm2-trace leaves them out when
        // empty). Rare (early exits, stop and restart requests): serde reads their items.
        host: match m.take("host") {
            None => Vec::new(),
            some => list(d, some, serde)?,
        },
        paths: match m.take("paths") {
            None => Vec::new(),
            some => list(d, some, serde)?,
        },
    })
}

fn snapshot_reason<'a>(m: &mut dyn Members<'a>) -> Option<SnapshotReason> {
    Some(match &*plain_str(or_null(m.take("kind")))? {
        "start" => SnapshotReason::Start,
        "stop_requested" => SnapshotReason::StopRequested {
            pm_id: opt(m.take("pm_id"), whole)?,
        },
        "restart_requested" => SnapshotReason::RestartRequested {
            pm_id: opt(m.take("pm_id"), whole)?,
        },
        "new_generation" => SnapshotReason::NewGeneration {
            pm_id: whole(or_null(m.take("pm_id")))?,
            pid: opt(m.take("pid"), |r| int32(Some(r)))?,
            generation: opt(m.take("generation"), whole)?,
        },
        "early_exit" => SnapshotReason::EarlyExit {
            pm_id: whole(or_null(m.take("pm_id")))?,
            pid: int32(m.take("pid"))?,
            generation: opt(m.take("generation"), whole)?,
            lived_ms: opt(m.take("lived_ms"), whole)?,
        },
        "requested" => SnapshotReason::Requested {
            why: string(or_null(m.take("why")))?,
            pm_id: opt(m.take("pm_id"), whole)?,
        },
        _ => return None,
    })
}

fn proc_snap<'a>(m: &mut dyn Members<'a>) -> Option<ProcSnap> {
    let d = m.doc();
    Some(ProcSnap {
        pid: int32(m.take("pid"))?,
        ppid: int32(m.take("ppid"))?,
        pgid: int32(m.take("pgid"))?,
        sid: int32(m.take("sid"))?,
        start: whole(or_null(m.take("start")))?,
        state: string(or_null(m.take("state")))?,
        cmdline: list(d, m.take("cmdline"), string)?,
        app: opt(m.take("app"), |r| object(d, Some(r), app_ref))?,
        how: opt(m.take("how"), |r| object(d, Some(r), attr_how))?,
        daemon: boolean(or_null(m.take("daemon")))?,
        in_tree: boolean(or_null(m.take("in_tree")))?,
    })
}

fn socket_hold<'a>(m: &mut dyn Members<'a>) -> Option<SocketHold> {
    let d = m.doc();
    Some(SocketHold {
        proto: unit(or_null(m.take("proto")), |s| {
            Some(match s {
                "tcp" => Proto::Tcp,
                "tcp6" => Proto::Tcp6,
                "udp" => Proto::Udp,
                "udp6" => Proto::Udp6,
                "unix" => Proto::Unix,
                _ => return None,
            })
        })?,
        addr: string(or_null(m.take("addr")))?,
        port: opt(m.take("port"), |r| {
            plain_u64(r)
                .and_then(|p| u16::try_from(p).ok())
                .or_else(|| serde(r))
        })?,
        inode: whole(or_null(m.take("inode")))?,
        pid: int32(m.take("pid"))?,
        start: whole(or_null(m.take("start")))?,
        app: opt(m.take("app"), |r| object(d, Some(r), app_ref))?,
        daemon: boolean(or_null(m.take("daemon")))?,
        in_tree: boolean(or_null(m.take("in_tree")))?,
    })
}

fn env_snap<'a>(m: &mut dyn Members<'a>) -> Option<EnvSnap> {
    let d = m.doc();
    Some(EnvSnap {
        pid: int32(m.take("pid"))?,
        start: whole(or_null(m.take("start")))?,
        app: opt(m.take("app"), |r| object(d, Some(r), app_ref))?,
        vars: list(d, m.take("vars"), |r| object(d, Some(r), env_var))?,
        truncated: boolean(or_null(m.take("truncated")))?,
    })
}

fn env_var<'a>(m: &mut dyn Members<'a>) -> Option<EnvVar> {
    Some(EnvVar {
        key: string(or_null(m.take("key")))?,
        value: string(or_null(m.take("value")))?,
    })
}

fn who<'a>(m: &mut dyn Members<'a>) -> Option<Who> {
    let d = m.doc();
    Some(Who {
        pid: int32(m.take("pid"))?,
        start: opt(m.take("start"), whole)?,
        ppid: int32(m.take("ppid"))?,
        app: opt(m.take("app"), |r| object(d, Some(r), app_ref))?,
        how: opt(m.take("how"), |r| object(d, Some(r), attr_how))?,
        // Declared `#[serde(default)]`: absent is false.
        daemon: match m.take("daemon") {
            None => false,
            Some(r) => boolean(r)?,
        },
        cmd: opt(m.take("cmd"), string)?,
    })
}

fn app_ref<'a>(m: &mut dyn Members<'a>) -> Option<AppRef> {
    Some(AppRef {
        pm2_home: string(or_null(m.take("pm2_home")))?,
        pm_id: whole(or_null(m.take("pm_id")))?,
        name: string(or_null(m.take("name")))?,
        generation: opt(m.take("generation"), whole)?,
        unique_id: opt(m.take("unique_id"), string)?,
    })
}

fn attr_how<'a>(m: &mut dyn Members<'a>) -> Option<AttrHow> {
    Some(match &*plain_str(or_null(m.take("from")))? {
        "environ" => AttrHow::Environ,
        "ancestry" => AttrHow::Ancestry {
            parent: int32(m.take("parent"))?,
        },
        "hint" => AttrHow::Hint {
            source: string(or_null(m.take("source")))?,
        },
        _ => return None,
    })
}

fn timing<'a>(m: &mut dyn Members<'a>) -> Option<Timing> {
    let how = plain_str(or_null(m.take("how")))?;
    let mut ns = |name: &str| whole(or_null(m.take(name)));
    Some(match &*how {
        "kernel" => Timing::Kernel {
            kernel_ns: ns("kernel_ns")?,
            observed_ns: ns("observed_ns")?,
        },
        "wakeup" => Timing::Wakeup {
            observed_ns: ns("observed_ns")?,
        },
        "start_time" => Timing::StartTime {
            not_before_ns: ns("not_before_ns")?,
            resolution_ns: ns("resolution_ns")?,
            observed_ns: ns("observed_ns")?,
        },
        "between" => Timing::Between {
            not_before_ns: ns("not_before_ns")?,
            observed_ns: ns("observed_ns")?,
        },
        "before_start" => Timing::BeforeStart {
            observed_ns: ns("observed_ns")?,
        },
        "observed" => Timing::Observed {
            observed_ns: ns("observed_ns")?,
        },
        _ => return None,
    })
}

fn exit_status<'a>(m: &mut dyn Members<'a>) -> Option<ExitStatus> {
    Some(match &*plain_str(or_null(m.take("kind")))? {
        "code" => ExitStatus::Code {
            code: int32(m.take("code"))?,
        },
        "signal" => ExitStatus::Signal {
            sig: int32(m.take("sig"))?,
            name: string(or_null(m.take("name")))?,
            core: boolean(or_null(m.take("core")))?,
        },
        "unknown" => ExitStatus::Unknown {
            why: string(or_null(m.take("why")))?,
        },
        _ => return None,
    })
}

fn via(raw: Option<&str>) -> Option<Via> {
    unit(or_null(raw), |s| {
        Some(match s {
            "netlink" => Via::Netlink,
            "pidfd" => Via::Pidfd,
            "proc_scan" => Via::ProcScan,
            "hint" => Via::Hint,
            _ => return None,
        })
    })
}

// ---- Values, from their text. An absent member reads as `null`, as serde's derive reads
// a missing field (None for an optional one, an error otherwise).

fn or_null(raw: Option<&str>) -> &str {
    raw.unwrap_or("null")
}

/// Serde's reading of value text `raw`.
fn serde<T: DeserializeOwned>(raw: &str) -> Option<T> {
    serde_json::from_str(raw).ok()
}

/// An object read by `read` from its members (in order, else by name), else by serde.
fn object<'a, T: DeserializeOwned>(
    doc: Doc<'a>,
    raw: Option<&'a str>,
    read: fn(&mut dyn Members<'a>) -> Option<T>,
) -> Option<T> {
    let raw = or_null(raw);
    if let Some(mut m) = InOrder::new(doc, raw) {
        if let Some(v) = read(&mut m) {
            if m.finished() {
                return Some(v);
            }
        }
        let mut f = Fields::new(doc);
        if f.read(raw) {
            if let Some(v) = read(&mut &f) {
                return Some(v);
            }
        }
    }
    serde(raw)
}

/// A value that may be null (absent is null), else read by `read`.
fn opt<T>(raw: Option<&str>, read: impl FnOnce(&str) -> Option<T>) -> Option<Option<T>> {
    match raw {
        None | Some("null") => Some(None),
        Some(r) => read(r).map(Some),
    }
}

/// An array whose items `item` reads; serde reads the whole when `item` declines one.
fn list<'a, T: DeserializeOwned>(
    doc: Doc<'a>,
    raw: Option<&'a str>,
    item: impl Fn(&'a str) -> Option<T>,
) -> Option<Vec<T>> {
    let raw = or_null(raw);
    if raw.starts_with('[') {
        if let Some(v) = doc.items(raw).map(item).collect::<Option<Vec<T>>>() {
            return Some(v);
        }
    }
    serde(raw)
}

/// A string (unescaped by serde when it has escapes).
fn string(raw: &str) -> Option<String> {
    match plain_str(raw) {
        Some(s) => Some(s.into_owned()),
        None => serde(raw),
    }
}

/// A `u64`.
fn whole(raw: &str) -> Option<u64> {
    plain_u64(raw).or_else(|| serde(raw))
}

/// An `i32` (absent is null, which is not one).
fn int32(raw: Option<&str>) -> Option<i32> {
    let raw = or_null(raw);
    plain_i32(raw).or_else(|| serde(raw))
}

fn boolean(raw: &str) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => serde(raw),
    }
}

/// A unit variant of an enum, named by a string `variant` knows.
fn unit<T: DeserializeOwned>(raw: &str, variant: impl Fn(&str) -> Option<T>) -> Option<T> {
    match plain_str(raw).as_deref().and_then(variant) {
        Some(v) => Some(v),
        None => serde(raw),
    }
}

/// `raw` when it is a whole number in `i32`'s range written plainly (`-` and digits, not
/// `-0`, which serde_json reads as a float); None otherwise.
fn plain_i32(raw: &str) -> Option<i32> {
    match raw.strip_prefix('-') {
        Some(digits) if !digits.starts_with('0') => {
            i32::try_from(-i64::try_from(plain_u64(digits)?).ok()?).ok()
        }
        Some(_) => None,
        None => i32::try_from(plain_u64(raw)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_i32_reads_as_serde_json_does() {
        for raw in [
            "0",
            "-0",
            "7",
            "-7",
            "2147483647",
            "2147483648",
            "-2147483648",
            "-2147483649",
            "99999999999999999999",
            "1.0",
            "1e3",
            "-",
            "",
            "\"1\"",
        ] {
            let serde = serde_json::from_str::<i32>(raw).ok();
            if let Some(n) = plain_i32(raw) {
                assert_eq!(Some(n), serde, "{raw}");
            }
        }
        assert_eq!(plain_i32("-2147483648"), Some(i32::MIN));
        assert_eq!(plain_i32("-0"), None);
        assert_eq!(serde_json::from_str::<i32>("-0").ok(), None);
    }
}
