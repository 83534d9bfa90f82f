//! The watcher does not busy-poll: with 100 quiet apps tracked, its CPU over a few
//! seconds stays far below a core in both modes. Prints the figure; the bound is loose
//! (20% of a core: a busy loop would show ~100%) because the host is shared. The real
//! figure comes from `cargo bench --bench procwatch_idle` (target: under 1%).
#[path = "../benches/procwatch_idle.rs"]
mod bench;

use pm2_trace::sources::procwatch::WatchMode;

#[test]
fn idle_cpu_with_100_apps() {
    for mode in [WatchMode::Netlink, WatchMode::Pidfd] {
        let m = bench::measure(mode, 100, 3.0);
        bench::print(&m);
        assert_eq!(
            m.tracked, 101,
            "the daemon and its 100 apps are tracked ({mode:?})"
        );
        assert!(
            m.cpu_pct < 20.0,
            "{mode:?}: {:.2}% of a core while idle",
            m.cpu_pct
        );
    }
}
