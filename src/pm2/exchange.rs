//! Decoding an RPC message, pairing a request with its reply, and what a reply says about
//! processes: the one place each is decided.
//!
//! The recorder's tap decoder pairs each message as it decodes it ([`Pairing`], before the
//! daemon acts on it): the watcher's hints follow that result, and the capture stores it
//! (`ask` and `asked` on each RPC message, `unanswered` on a close). The interpreter reads
//! the pairing from the events, the timeline and the TUI from the interpreter's entries;
//! none of them pairs again. A capture recorded before the recorder paired is paired when
//! interpreted, by the same [`Pairing`].
//!
//! pm2-axon-rpc matches a reply to its request by the id the client chose, per connection;
//! one connection may carry several requests in flight. A client may also never read its
//! replies, or the capture may begin after a request was sent, so what is kept is bounded:
//!
//! - at most [`MAX_WAITING_PER_CONN`] requests wait per connection; beyond, the connection's
//!   oldest is forgotten (its reply, if it comes, pairs with nothing);
//! - at most [`MAX_WAITING`] wait in all; beyond, the oldest of all is forgotten (so many
//!   connections whose close was not seen cost no more);
//! - a connection's close drops everything it had waiting (returned, oldest first);
//! - a request sent again with an id still waiting replaces the first.

use super::meaning::{MonitorProc, Pm2Call};
use crate::event::{Asked, Direction, MonoNs};
use crate::wire::amp::Message;
use crate::wire::json::Node;
use crate::wire::rpc::{self, Call, Reply};
use std::collections::{BTreeMap, HashMap};

/// One RPC message, decoded: a request with its PM2 meaning, a reply, or neither.
pub(crate) enum Rpc<'m> {
    Call {
        call: Call<'m>,
        meaning: Pm2Call,
    },
    Reply(Reply<'m>),
    /// Neither shaped like a request nor like a reply (kept, shown raw).
    Other,
}

impl<'m> Rpc<'m> {
    /// Decode a message that went in direction `dir`.
    pub(crate) fn decode(dir: Direction, msg: &'m Message) -> Rpc<'m> {
        match dir {
            Direction::ToDaemon => match rpc::parse_call(msg) {
                Some(call) => {
                    let meaning = Pm2Call::from_call(&call);
                    Rpc::Call { call, meaning }
                }
                None => Rpc::Other,
            },
            Direction::ToClient => rpc::parse_reply(msg).map_or(Rpc::Other, Rpc::Reply),
        }
    }
}

/// What the pairing decided for one message: what [`crate::event::Event::RpcMessage`] stores.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Paired {
    /// A request's number; for a reply, the number of the request it answers.
    pub(crate) ask: Option<u64>,
    /// For a reply: the request it answers.
    pub(crate) asked: Option<Asked>,
}

/// The one pairing of RPC requests and replies, under the bounded policy of [`Exchanges`].
/// The recorder's tap decoder runs it on every message as it decodes it; the interpreter runs
/// it only on a capture recorded before the recorder did (whose messages carry no pairing).
#[derive(Debug, Default)]
pub(crate) struct Pairing {
    waiting: Exchanges<Asked>,
}

impl Pairing {
    pub(crate) fn new() -> Pairing {
        Pairing::default()
    }

    /// Pair message `rpc`, seen at `t` on `conn`.
    pub(crate) fn pair(&mut self, t: MonoNs, conn: u64, rpc: &Rpc) -> Paired {
        match rpc {
            Rpc::Call { call, meaning } => {
                let asked = Asked {
                    t,
                    method: call.method.to_string(),
                    pm_id: meaning.target_id(),
                };
                Paired {
                    ask: Some(self.waiting.ask(conn, &call.id, asked)),
                    asked: None,
                }
            }
            Rpc::Reply(reply) => {
                let (ask, asked) = self.waiting.answer(conn, &reply.id).unzip();
                Paired { ask, asked }
            }
            Rpc::Other => Paired::default(),
        }
    }

    /// `conn` closed: the methods of its requests still waiting, oldest first.
    pub(crate) fn close(&mut self, conn: u64) -> Vec<String> {
        self.waiting
            .close(conn)
            .into_iter()
            .map(|a| a.method)
            .collect()
    }
}

/// Requests kept waiting per connection.
pub(crate) const MAX_WAITING_PER_CONN: usize = 1024;
/// Requests kept waiting in all.
pub(crate) const MAX_WAITING: usize = 65_536;

/// The requests still waiting for their reply, by connection and id, each with what its
/// owner keeps about it (`V`: the method for the hints, the request's row for the TUI...).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exchanges<V> {
    conns: HashMap<u64, Waiting<V>>,
    /// The connection of every waiting request, by the order they were asked in: the first
    /// is the oldest.
    order: BTreeMap<u64, u64>,
    /// Counts requests: their order.
    clock: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Waiting<V> {
    by_id: HashMap<String, (u64, V)>,
    /// Ids by the order they were asked in: the first is the oldest.
    order: BTreeMap<u64, String>,
}

impl<V> Default for Exchanges<V> {
    fn default() -> Self {
        Exchanges {
            conns: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }
}

impl<V> Exchanges<V> {
    /// Request `id` was sent on `conn`; `value` is given back with its reply. Returns the
    /// request's number: requests are numbered from 1 in the order they are asked, over all
    /// connections.
    pub(crate) fn ask(&mut self, conn: u64, id: &str, value: V) -> u64 {
        self.clock += 1;
        let seq = self.clock;
        let full = match self.conns.get_mut(&conn) {
            Some(w) => match w.by_id.remove(id) {
                Some((old, _)) => {
                    w.order.remove(&old);
                    self.order.remove(&old);
                    false
                }
                None => w.by_id.len() >= MAX_WAITING_PER_CONN,
            },
            None => false,
        };
        if full {
            if let Some(&oldest) = self.conns.get(&conn).and_then(|w| w.order.keys().next()) {
                self.forget(oldest, conn);
            }
        }
        if self.order.len() >= MAX_WAITING {
            if let Some((&oldest, &c)) = self.order.iter().next() {
                self.forget(oldest, c);
            }
        }
        let w = self.conns.entry(conn).or_insert_with(|| Waiting {
            by_id: HashMap::new(),
            order: BTreeMap::new(),
        });
        w.by_id.insert(id.to_owned(), (seq, value));
        w.order.insert(seq, id.to_owned());
        self.order.insert(seq, conn);
        seq
    }

    /// Forget request number `seq` of `conn`.
    fn forget(&mut self, seq: u64, conn: u64) {
        self.order.remove(&seq);
        if let Some(w) = self.conns.get_mut(&conn) {
            if let Some(id) = w.order.remove(&seq) {
                w.by_id.remove(&id);
            }
            if w.by_id.is_empty() {
                self.conns.remove(&conn);
            }
        }
    }

    /// The reply `id` arrived on `conn`: the number of its request and what was kept with
    /// it, if it was waiting.
    pub(crate) fn answer(&mut self, conn: u64, id: &str) -> Option<(u64, V)> {
        let w = self.conns.get_mut(&conn)?;
        let (seq, value) = w.by_id.remove(id)?;
        w.order.remove(&seq);
        self.order.remove(&seq);
        if w.by_id.is_empty() {
            self.conns.remove(&conn);
        }
        Some((seq, value))
    }

    /// `conn` closed: what its requests still waiting kept, oldest first.
    pub(crate) fn close(&mut self, conn: u64) -> Vec<V> {
        let Some(mut w) = self.conns.remove(&conn) else {
            return Vec::new();
        };
        let order = std::mem::take(&mut w.order);
        order
            .into_iter()
            .filter_map(|(seq, id)| {
                self.order.remove(&seq);
                w.by_id.remove(&id).map(|(_, v)| v)
            })
            .collect()
    }

    /// Requests waiting, over all connections.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        debug_assert_eq!(
            self.order.len(),
            self.conns.values().map(|w| w.by_id.len()).sum::<usize>()
        );
        self.order.len()
    }
}

/// What a successful reply says about processes, read the same way for the watcher's hints
/// and for the interpreter: the same process objects ([`MonitorProc::nodes_in_reply`]), the
/// same rule for what is running and what was just started.
pub(crate) struct ReplyProcs<'a> {
    /// Every app of a getMonitorData list, or the one process a restart, stop, ... reply
    /// carries, still as views of the reply's text.
    nodes: Vec<Node<'a>>,
    /// Whether the reply lists what is running now: a getMonitorData list, or the process a
    /// start (restart, start, reload, softReload, prepare) reports.
    current: bool,
    starts: bool,
}

impl<'a> ReplyProcs<'a> {
    /// Find the processes in a reply's arguments, given the method of its request (if it
    /// was seen).
    pub(crate) fn read(method: Option<&str>, args: &[Node<'a>]) -> ReplyProcs<'a> {
        let starts = method.is_some_and(starts_process);
        ReplyProcs {
            nodes: MonitorProc::nodes_in_reply(method, args),
            current: starts || method == Some("getMonitorData"),
            starts,
        }
    }

    /// Everything the reply says about each process (the interpreter's reading).
    pub(crate) fn procs(&self) -> Vec<MonitorProc> {
        self.nodes.iter().map(MonitorProc::from_node).collect()
    }

    /// The pid of the process the request started (its new generation).
    pub(crate) fn new_pid(&self) -> Option<i64> {
        if !self.starts {
            return None;
        }
        MonitorProc::ids_of(self.nodes.first()?)
            .0
            .filter(|p| *p > 0)
    }

    /// The processes the daemon says run now, as (pid, pm_id, name): only these fields are
    /// read (the watcher's hints, on the tap thread).
    pub(crate) fn running(&self) -> Vec<(i64, u64, String)> {
        if !self.current {
            return Vec::new();
        }
        self.nodes
            .iter()
            .filter_map(|n| match MonitorProc::ids_of(n) {
                (Some(pid), Some(pm_id), name) if pid > 0 => {
                    Some((pid, pm_id, name.unwrap_or_default()))
                }
                _ => None,
            })
            .collect()
    }
}

/// Whether a successful reply to `method` reports a process pm2 has just started (its pid
/// is the new generation's).
fn starts_process(method: &str) -> bool {
    matches!(
        method,
        "restartProcessId"
            | "startProcessId"
            | "reloadProcessId"
            | "softReloadProcessId"
            | "prepare"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What was kept with the request a reply pairs with.
    fn kept<V>(x: &mut Exchanges<V>, conn: u64, id: &str) -> Option<V> {
        x.answer(conn, id).map(|(_, v)| v)
    }

    #[test]
    fn pairs_by_connection_and_id() {
        let mut x = Exchanges::default();
        assert_eq!(x.ask(1, "a", "restartProcessId"), 1);
        assert_eq!(x.ask(2, "a", "getMonitorData"), 2);
        assert_eq!(x.answer(2, "a"), Some((2, "getMonitorData")));
        assert_eq!(x.answer(2, "a"), None, "a reply pairs once");
        assert_eq!(x.answer(3, "a"), None);
        assert_eq!(x.answer(1, "a"), Some((1, "restartProcessId")));
        assert_eq!(x.waiting(), 0);
        assert!(x.conns.is_empty());
    }

    #[test]
    fn a_flood_of_unanswered_requests_stays_bounded() {
        let mut x = Exchanges::default();
        for i in 0..100_000u64 {
            x.ask(7, &i.to_string(), i);
        }
        assert_eq!(x.waiting(), MAX_WAITING_PER_CONN);
        // The oldest were forgotten, the newest still pair.
        assert_eq!(kept(&mut x, 7, "0"), None);
        assert_eq!(kept(&mut x, 7, "99999"), Some(99_999));
        let first_kept = 100_000 - MAX_WAITING_PER_CONN as u64;
        assert_eq!(kept(&mut x, 7, &first_kept.to_string()), Some(first_kept));
        // Many connections never closed: the oldest request of all is forgotten.
        let mut x = Exchanges::default();
        let conns = (MAX_WAITING / 2 + 500) as u64;
        for c in 0..conns {
            x.ask(c, "1", c);
            x.ask(c, "2", c);
        }
        assert_eq!(x.waiting(), MAX_WAITING);
        assert_eq!(x.conns.len(), MAX_WAITING / 2);
        assert_eq!(kept(&mut x, 0, "1"), None);
        assert_eq!(kept(&mut x, 499, "2"), None);
        assert_eq!(kept(&mut x, 500, "1"), Some(500));
        assert_eq!(kept(&mut x, conns - 1, "2"), Some(conns - 1));
    }

    #[test]
    fn the_oldest_of_all_goes_first() {
        let mut x = Exchanges::default();
        x.ask(0, "old", 0u64);
        for i in 1..MAX_WAITING as u64 {
            x.ask(i % 100 + 1, &i.to_string(), i);
        }
        x.ask(0, "new", 1);
        assert_eq!(x.waiting(), MAX_WAITING);
        assert_eq!(kept(&mut x, 0, "old"), None);
        assert_eq!(kept(&mut x, 0, "new"), Some(1));
    }

    #[test]
    fn close_drops_what_was_waiting_oldest_first() {
        let mut x = Exchanges::default();
        x.ask(1, "b", "first");
        x.ask(1, "a", "second");
        x.ask(2, "a", "other conn");
        assert_eq!(x.close(1), vec!["first", "second"]);
        assert_eq!(kept(&mut x, 1, "a"), None);
        assert_eq!(x.close(1), Vec::<&str>::new());
        assert_eq!(x.waiting(), 1);
        assert_eq!(x.close(2), vec!["other conn"]);
        assert_eq!(x.waiting(), 0);
        assert!(x.conns.is_empty());
    }

    #[test]
    fn an_id_asked_again_replaces_the_first() {
        let mut x = Exchanges::default();
        x.ask(1, "a", 1);
        x.ask(1, "a", 2);
        assert_eq!(x.waiting(), 1);
        assert_eq!(x.close(1), vec![2]);
    }

    fn reply(json: &str) -> crate::wire::json::Json {
        crate::wire::json::Json::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn every_start_method_reports_its_new_process() {
        let r = reply(r#"[{"pid":4242,"pm_id":3,"name":"web","pm2_env":{"status":"online"}}]"#);
        let args = r.node().items().unwrap();
        for m in [
            "restartProcessId",
            "startProcessId",
            "reloadProcessId",
            "softReloadProcessId",
            "prepare",
        ] {
            let read = ReplyProcs::read(Some(m), &args);
            assert_eq!(read.new_pid(), Some(4242), "{m}");
            assert_eq!(read.running(), vec![(4242, 3, "web".into())], "{m}");
        }
        // A stop reply names the process but reports nothing running; an unpaired reply
        // (its request unseen) neither.
        for m in [Some("stopProcessId"), Some("deleteProcessId"), None] {
            let read = ReplyProcs::read(m, &args);
            assert_eq!(read.procs().len(), 1, "{m:?}");
            assert_eq!(read.new_pid(), None, "{m:?}");
            assert!(read.running().is_empty(), "{m:?}");
        }
    }

    #[test]
    fn a_monitor_list_reports_every_running_process() {
        let r = reply(
            r#"[[{"pid":10,"pm_id":0,"name":"a","pm2_env":{}},{"pid":0,"pm_id":1,"name":"b","pm2_env":{}}]]"#,
        );
        let args = r.node().items().unwrap();
        let read = ReplyProcs::read(Some("getMonitorData"), &args);
        assert_eq!(read.procs().len(), 2);
        assert_eq!(read.new_pid(), None);
        assert_eq!(read.running(), vec![(10, 0, "a".into())]);
    }
}
