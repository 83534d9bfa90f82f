//! Writes the man pages of `pm2-trace` from its clap definitions (clap_mangen): `pm2-trace.1`
//! and one page per subcommand (`pm2-trace-record.1`, ...), into the directory given.
//!
//! `cargo run --example man -- target/man` (used by contrib/deb/build).

// The command line is defined once, in the binary's main.rs; it is read here as a module.
#[allow(dead_code, unused_imports)]
#[path = "../src/main.rs"]
mod binary;

use clap::CommandFactory;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "target/man".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let cmd = binary::Cli::command();
    let write = |name: &str, cmd: clap::Command| -> std::io::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut out = std::fs::File::create(&path)?;
        clap_mangen::Man::new(cmd).render(&mut out)?;
        println!("{}", path.display());
        Ok(())
    };
    write("pm2-trace", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are &'static str (its `string` feature is off); this runs once.
        let name: &'static str = format!("pm2-trace-{}", sub.get_name()).leak();
        write(name, sub.clone().name(name))?;
    }
    Ok(())
}
