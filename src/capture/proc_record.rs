//! A process-watcher record (`"type":"proc"`) read into its [`ProcEvent`] from the record's
//! validated text by hand, as the reader's fast path reads the other event types: without
//! serde's buffering of internally tagged types (`kind`, `how`, `from`), without parsing
//! again text the reader has validated (a snapshot names a dozen processes and sockets).
//!
//! Members are read as [`super::members`] reads them: in the order pm2-trace writes them,
//! and by name when the text is not so written (another order, whitespace, unknown or
//! repeated members, escaped keys). Each type is built with a struct literal, so a field
//! added, removed or retyped fails to compile here. Every reading is exact or declines, so
//! the event is always the one `Stamped`'s own `Deserialize` gives (held to it by the
//! reader's tests).

use super::members::{
    boolean, int32, list, object, opt, or_null, plain_str, serde, string, unit, whole, Members,
};
use crate::event::proc::{
    AppRef, AttrHow, EnvSnap, EnvVar, ExitStatus, ProcSnap, Proto, Snapshot, SnapshotReason,
    SocketHold, StatusFrom, Timing, Via, Who,
};
use crate::event::ProcEvent;
use crate::wire::json::scan::plain_u64;

/// The event of a `proc` record whose members after its `type` are `m`; None when the
/// record is not one (serde then decides).
pub(super) fn proc_event<'a>(m: &mut dyn Members<'a>) -> Option<ProcEvent> {
    let kind = plain_str(or_null(m.take("kind")))?;
    variant(&kind, m)
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
