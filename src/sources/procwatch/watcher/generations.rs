//! Generations: the newest generation seen of each app (a newer one queues a snapshot),
//! and the main processes of each app's latest generations with what they were started
//! with, so that a stop or restart can record the generation it replaces even after pm2
//! killed it.

use super::Watcher;
use crate::event::proc::{AppRef, SnapshotReason};
use crate::event::{mono_now, MonoNs};
use crate::sources::procwatch::procfs;
use crate::sources::procwatch::start_paths::{self, ProcPaths};
use std::collections::HashMap;

/// Generations remembered per app by [`MainFacts`].
const MAINS_PER_APP: usize = 3;
/// Apps whose generations are remembered.
const MAINS_APPS: usize = 4096;

/// A generation's main process as it was when the watcher first saw it: what a stop or
/// restart request needs from the generation it replaces, kept because pm2 (7.x above
/// all) can kill that process and spawn the next before the request's snapshot runs.
pub(super) struct MainFacts {
    pid: i32,
    start: Option<u64>,
    /// When the watcher first saw it (its fork's instant when known).
    seen: MonoNs,
    app: Option<AppRef>,
    environ: Environ,
    paths: Option<ProcPaths>,
}

/// A process's environment block (and whether it was cut short), or why it was unreadable.
pub(super) type Environ = Result<(Vec<u8>, bool), String>;

/// The main process of a generation a stop or restart replaces.
pub(super) struct ReplacedMain {
    pub(super) pid: i32,
    pub(super) start: Option<u64>,
    pub(super) app: Option<AppRef>,
    /// Its environment and paths as read when it appeared, when the watcher saw it appear.
    pub(super) remembered: Option<(Environ, Option<ProcPaths>)>,
}

impl Watcher {
    /// Record a newly attributed generation; queue a snapshot when it is newer than any
    /// generation seen for the app.
    pub(super) fn note_generation(&mut self, pid: i32) {
        let Some(t) = self.table.get(&pid) else {
            return;
        };
        let Some(app) = &t.app else { return };
        let Some(g) = app.generation else { return };
        let pm_id = app.pm_id;
        let newer = match self.newest_gen.get(&pm_id) {
            Some(&old) => g > old,
            None => true,
        };
        if newer {
            self.newest_gen.insert(pm_id, g);
            let main = t.ppid == self.daemon.unwrap_or(-1);
            if !self.initializing && main {
                self.queued_snapshots.push((
                    SnapshotReason::NewGeneration {
                        pm_id,
                        pid: Some(pid),
                        generation: Some(g),
                    },
                    mono_now(),
                ));
            }
            if main {
                self.remember_main(pid);
            }
        }
    }

    /// Read what a generation's main process was started with (environment, working
    /// directory, executable, script), while it runs.
    fn remember_main(&mut self, pid: i32) {
        let Some(t) = self.table.get(&pid) else {
            return;
        };
        let Some(pm_id) = t.app.as_ref().map(|a| a.pm_id) else {
            return;
        };
        if !self.mains.contains_key(&pm_id) && self.mains.len() >= MAINS_APPS {
            return;
        }
        let facts = MainFacts {
            pid,
            start: t.start,
            seen: t.start_mono.unwrap_or(t.seen_ns),
            app: t.app.clone(),
            environ: procfs::read_environ(&self.proc_root, pid)
                .map(|(mut block, cut)| {
                    block.shrink_to_fit();
                    (block, cut)
                })
                .map_err(|e| e.to_string()),
            paths: start_paths::read(&self.proc_root, pid),
        };
        let v = self.mains.entry(pm_id).or_default();
        v.retain(|m| m.pid != pid);
        v.push(facts);
        if v.len() > MAINS_PER_APP {
            v.remove(0);
        }
    }

    /// The main process of the generation each app in `scope` ran when a stop or restart
    /// was asked at `asked`: the newest remembered main first seen before then, else the
    /// newest generation's main among the tracked processes (attributed, newest
    /// generation, a child of the daemon if there is one, oldest first). By pid.
    pub(super) fn replaced_generation_mains(
        &self,
        scope: Option<u64>,
        asked: MonoNs,
    ) -> Vec<ReplacedMain> {
        let mut best: HashMap<u64, (u64, bool, u64, i32)> = HashMap::new();
        for t in self.table.values() {
            let Some(a) = &t.app else { continue };
            if scope.is_some_and(|s| s != a.pm_id) {
                continue;
            }
            let key = (
                a.generation.unwrap_or(0),
                Some(t.ppid) == self.daemon,
                u64::MAX - t.start.unwrap_or(u64::MAX),
                t.pid,
            );
            let e = best.entry(a.pm_id).or_insert(key);
            if key > *e {
                *e = key;
            }
        }
        let mut ids: Vec<u64> = best.keys().copied().collect();
        ids.extend(
            self.mains
                .keys()
                .filter(|id| scope.is_none_or(|s| s == **id)),
        );
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            let remembered = self
                .mains
                .get(&id)
                .and_then(|v| v.iter().rev().find(|m| m.seen <= asked));
            match remembered {
                Some(m) => out.push(ReplacedMain {
                    pid: m.pid,
                    start: m.start,
                    app: m.app.clone(),
                    remembered: Some((m.environ.clone(), m.paths.clone())),
                }),
                None => {
                    let Some(t) = best.get(&id).and_then(|k| self.table.get(&k.3)) else {
                        continue;
                    };
                    out.push(ReplacedMain {
                        pid: t.pid,
                        start: t.start,
                        app: t.app.clone(),
                        remembered: None,
                    });
                }
            }
        }
        out.sort_unstable_by_key(|m| m.pid);
        out
    }
}
