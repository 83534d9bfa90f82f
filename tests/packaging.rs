//! What `contrib/deb/build` packages: the `.deb` assets declared in Cargo.toml exist (or
//! are made by the build script), the systemd unit runs the packaged binary, and the man
//! pages generated from the clap definitions cover every command with its options.
//!
//! The static musl build itself needs the musl target from rustup, which CI cannot fetch
//! (its network reaches the package registries only); README "Installing on a server" gives
//! its size as measured.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `assets = [[source, destination, mode], ...]` of `[package.metadata.deb]`.
fn deb_assets() -> Vec<(String, String, String)> {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let section = toml
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("a [package.metadata.deb] section");
    let section = section.split("\n[").next().unwrap_or(section);
    let assets = section
        .split("assets = [")
        .nth(1)
        .expect("assets in [package.metadata.deb]");
    assets
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("[\""))
        .map(|l| {
            let fields: Vec<String> = l
                .trim_start_matches('[')
                .trim_end_matches(',')
                .trim_end_matches(']')
                .split(',')
                .map(|f| f.trim().trim_matches('"').to_owned())
                .collect();
            assert_eq!(fields.len(), 3, "asset line {l:?}");
            (fields[0].clone(), fields[1].clone(), fields[2].clone())
        })
        .collect()
}

#[test]
fn deb_assets_exist_or_are_made_by_the_build_script() {
    let build = std::fs::read_to_string(root().join("contrib/deb/build")).expect("build script");
    let assets = deb_assets();
    assert!(assets.len() >= 4, "{assets:?}");
    for (src, dest, mode) in &assets {
        assert!(
            mode == "755" || mode == "644",
            "{src}: mode {mode} (executables 755, the rest 644)"
        );
        match src.as_str() {
            // Made by the build script: the binary (cargo-deb takes it from the --target
            // directory) and the gzipped man pages.
            "target/release/pm2-trace" => {
                assert_eq!(dest, "usr/bin/", "the binary goes to /usr/bin");
                assert_eq!(mode, "755");
                assert!(build.contains("cargo build --release"), "{build}");
            }
            "target/man/*.1.gz" => {
                assert!(dest.starts_with("usr/share/man/man1"), "{dest}");
                assert!(
                    build.contains("--example man -- target/man") && build.contains("gzip"),
                    "{build}"
                );
            }
            _ => assert!(root().join(src).is_file(), "asset {src} is missing"),
        }
    }
}

#[test]
fn the_unit_runs_the_packaged_binary() {
    let (_, dest, _) = deb_assets()
        .into_iter()
        .find(|(s, _, _)| s.ends_with("/pm2-trace"))
        .expect("the binary among the assets");
    let unit = std::fs::read_to_string(root().join("contrib/systemd/pm2-trace.service"))
        .expect("the unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let program = exec.split_whitespace().next().unwrap();
    assert_eq!(program, format!("/{dest}pm2-trace"), "{exec}");
    assert!(exec.contains(" record --dir "), "{exec}");
    assert!(
        deb_assets()
            .iter()
            .any(|(s, d, _)| s == "contrib/systemd/pm2-trace.service"
                && d == "lib/systemd/system/"),
        "the unit is packaged where systemd looks"
    );
}

/// The example `man` (built by `cargo test` with the other examples).
fn man_example() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let man = debug.join("examples").join("man");
    assert!(
        man.is_file(),
        "{} missing: `cargo test` builds the examples",
        man.display()
    );
    man
}

#[test]
fn man_pages_cover_every_command_and_its_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(man_example())
        .arg(dir.path())
        .output()
        .expect("run the man example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"))
    };
    // roff escapes '-' as '\-'.
    let has = |text: &str, opt: &str| text.contains(&opt.replace('-', "\\-"));
    let main = page("pm2-trace");
    for sub in ["record", "replay", "tui", "explain", "repair"] {
        assert!(
            has(&main, &format!("pm2-trace-{sub}(1)")),
            "pm2-trace.1 does not list {sub}"
        );
        let text = page(&format!("pm2-trace-{sub}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{sub}: not roff"
        );
    }
    let record = page("pm2-trace-record");
    for opt in [
        "--pm2-home",
        "--dir",
        "--keep",
        "--keep-for",
        "--on-incident",
        "--all",
    ] {
        assert!(has(&record, opt), "record page lacks {opt}");
    }
    let explain = page("pm2-trace-explain");
    for opt in ["--since", "--json", "--fail-on"] {
        assert!(has(&explain, opt), "explain page lacks {opt}");
    }
}
