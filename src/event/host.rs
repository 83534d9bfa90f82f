//! Who holds an address elsewhere on the host, as a snapshot records it
//! ([`super::proc::Snapshot::host`]): found by [`crate::sources::holders`], which also says
//! what a holder is to a given daemon (`Identity::relation`).

use serde::{Deserialize, Serialize};

/// What a process is to the pm2 world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pm2Role {
    /// A PM2 God daemon (its process title names its home). In cluster mode it holds the
    /// apps' listening sockets.
    Daemon { pm2_home: String },
    /// A process of a pm2 app (its environment names the daemon's home and the app).
    App {
        pm2_home: String,
        name: Option<String>,
        pm_id: Option<u64>,
        /// pm2's `restart_time` when this generation was spawned.
        generation: Option<u64>,
    },
}

impl Pm2Role {
    pub fn pm2_home(&self) -> &str {
        match self {
            Pm2Role::Daemon { pm2_home } | Pm2Role::App { pm2_home, .. } => pm2_home,
        }
    }
}

/// Who a process is, as far as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub pid: i32,
    /// Start time in clock ticks since boot (with the pid, names the process uniquely).
    pub start: u64,
    /// Real uid, when readable.
    pub uid: Option<u32>,
    /// The command line, arguments joined by spaces, shortened.
    pub cmd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm2: Option<Pm2Role>,
    /// The systemd unit its cgroup names (`nginx.service`, `session-3.scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The container its cgroup names (`docker 3f2a9c1b7d4e`, `kubernetes cri-containerd 1a2b...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Identity {
    /// `pid 4242 (app api:1 of the PM2 daemon at /srv/other/.pm2, uid 1001)`,
    /// `pid 77 (nginx: master process, systemd unit nginx.service)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        match &self.pm2 {
            Some(Pm2Role::Daemon { pm2_home }) => {
                parts.push(format!("the PM2 daemon of PM2_HOME={pm2_home}"))
            }
            Some(Pm2Role::App {
                pm2_home,
                name,
                pm_id,
                ..
            }) => {
                let app = match (name, pm_id) {
                    (Some(n), Some(i)) => format!("{n}:{i}"),
                    (Some(n), None) => n.clone(),
                    (None, Some(i)) => format!("pm_id {i}"),
                    (None, None) => "an app".into(),
                };
                parts.push(format!(
                    "app {app} of the PM2 daemon at PM2_HOME={pm2_home}"
                ));
            }
            None => parts.push(format!("`{}`", self.cmd)),
        }
        if let Some(c) = &self.container {
            parts.push(format!("container {c}"));
        } else if let Some(u) = &self.unit {
            parts.push(format!("systemd unit {u}"));
        }
        if let Some(uid) = self.uid {
            parts.push(format!("uid {uid}"));
        }
        format!("pid {} ({})", self.pid, parts.join(", "))
    }
}

/// A listener and the processes holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHold {
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`.
    pub proto: String,
    pub addr: String,
    pub port: Option<u16>,
    pub inode: u64,
    /// The holders, oldest first (a listener inherited by forked children has several; the
    /// first is usually the one that bound it).
    pub holders: Vec<Identity>,
}
