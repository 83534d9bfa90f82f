//! The process watcher: exits, signals, descendants and ports, from the kernel and /proc.
pub mod event;
