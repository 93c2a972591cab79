//! Build script: man pages (section 8) and shell completions (bash, zsh, fish)
//! for the binaries, generated from the same clap definitions that parse their
//! command lines (`src/cli/*.rs`, each self-contained for this purpose), so
//! `--help`, the man pages and the completions never disagree.
//!
//! Output: `$OUT_DIR/man/*.8` and `$OUT_DIR/completions/{bash,zsh,fish}/`.
//! `scripts/package` finds `OUT_DIR` through cargo's build-script message and
//! copies them into the Debian package.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

#[allow(dead_code)]
#[path = "src/cli/director.rs"]
mod director;

#[allow(dead_code)]
#[path = "src/cli/ulvsadm.rs"]
mod ulvsadm;

#[allow(dead_code)]
#[path = "src/cli/decap.rs"]
mod decap;

/// One man page per command and, for ulvsadm, one per verb (`ulvsadm-list.8`),
/// as git does: `man ulvsadm-drain` answers what a verb does.
fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_man(&cmd, dir)
}

fn write_man(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("ulvs")
        .source(format!("ulvs {}", env!("CARGO_PKG_VERSION")));
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render(&mut out)?;
    std::fs::write(path, out)
}

fn completions(mut cmd: clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    use clap_complete::Shell;
    for (shell, sub) in [(Shell::Bash, "bash"), (Shell::Zsh, "zsh"), (Shell::Fish, "fish")] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        clap_complete::generate_to(shell, &mut cmd, name, &d)?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let man = out.join("man");
    let comp = out.join("completions");
    std::fs::create_dir_all(&man)?;
    for (cmd, name) in [
        (director::Args::command(), "ulvs-director"),
        (ulvsadm::Args::command(), "ulvsadm"),
        (decap::Args::command(), "ulvs-decap"),
    ] {
        let cmd = cmd.name(name).bin_name(name);
        man_pages(cmd.clone(), &man)?;
        completions(cmd, name, &comp)?;
    }
    Ok(())
}
