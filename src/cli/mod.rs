//! The command lines of the binaries, as plain clap definitions (each file
//! stands alone so `build.rs` can include it to generate man pages and
//! completions).

pub mod decap;
pub mod director;
pub mod ulvsadm;

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    /// Every argument of `cmd` and of its subcommands, with the path to it,
    /// that has no help text (clap's own --help/--version excepted).
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        let here = format!("{path} {}", cmd.get_name());
        if cmd.get_about().is_none() {
            out.push(format!("{here}: no about"));
        }
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                out.push(format!("{here} {id}"));
            }
            for v in a.get_possible_values() {
                if !v.is_hide_set() && v.get_help().is_none() {
                    out.push(format!("{here} {id}={}", v.get_name()));
                }
            }
        }
        for s in cmd.get_subcommands() {
            if s.get_name() != "help" {
                undocumented(s, &here, out);
            }
        }
    }

    /// The man pages and completions are generated from these definitions:
    /// a flag without help text would be a blank entry in them.
    #[test]
    fn every_argument_has_help_text() {
        let mut out = Vec::new();
        for cmd in [
            super::director::Args::command(),
            super::ulvsadm::Args::command(),
            super::decap::Args::command(),
        ] {
            let mut cmd = cmd;
            cmd.build();
            undocumented(&cmd, "", &mut out);
        }
        assert!(out.is_empty(), "arguments without help text: {out:?}");
    }

    #[test]
    fn config_defaults_to_etc_ulvs() {
        let a = super::director::Args::try_parse_from(["ulvs-director", "--check"]).unwrap();
        assert_eq!(a.config, std::path::Path::new("/etc/ulvs/ulvs.yaml"));
    }
}
