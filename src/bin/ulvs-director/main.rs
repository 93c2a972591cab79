//! `ulvs-director`: argument parsing and wiring. The director itself is
//! `ulvs::control::director`; the fast path is `ulvs::dataplane`.

use std::process::ExitCode;

use clap::Parser;
use ulvs::cli::director::Args;
use ulvs::control::config::Config;
use ulvs::control::director;

/// `--cleanup`: exit 0 when nothing is left behind.
fn cleanup(cfg: &Config) -> ExitCode {
    let sock = &cfg.control_socket;
    if std::os::unix::net::UnixStream::connect(sock).is_ok() {
        eprintln!(
            "ulvs-director: a director is running on {}; nothing removed",
            sock.display()
        );
        return ExitCode::SUCCESS;
    }
    let _ = std::fs::remove_file(sock);
    if let Some(table) = cfg.route_table {
        // A director's own device dies with it; one that someone made
        // persistent would block the next start.
        match ulvs::control::hostroutes::cleanup(table) {
            Ok(true) => eprintln!(
                "ulvs-director: removed device {} (and its routes in table {table})",
                ulvs::control::hostroutes::device_name(table)
            ),
            Ok(false) => {}
            Err(e) => {
                eprintln!(
                    "ulvs-director: cannot remove device {}: {e}",
                    ulvs::control::hostroutes::device_name(table)
                );
                return ExitCode::from(1);
            }
        }
    }
    match ulvs::control::nft::remove(&cfg.interface) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "ulvs-director: cannot remove the drop rule (nft table netdev {}): {e}",
                ulvs::control::nft::table_name(&cfg.interface)
            );
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let (cfg, digest) = match Config::load_digested(&args.config) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    };
    let unsupported = director::unsupported(&cfg, &args.config.display().to_string());
    if !unsupported.is_empty() {
        for e in &unsupported {
            eprintln!("{e}");
        }
        return ExitCode::from(1);
    }
    if args.cleanup {
        return cleanup(&cfg);
    }
    if args.check {
        println!("{}: ok ({} services)", args.config.display(), cfg.services.len());
        return ExitCode::SUCCESS;
    }
    match director::run(args.config, cfg, digest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ulvs-director: {}", e.chain());
            ExitCode::from(1)
        }
    }
}
