//! The `failover` binary: flags and YAML → [`Config`], logging, then the workers.

use clap::Parser;

use failover::{Config, Flags};

fn main() {
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(e) if e.use_stderr() => {
            // One line naming the flag, as for every other configuration error.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("failover: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    };
    failover::raise_nofile_limit();
    let cfg = match Config::from_flags(flags) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("failover: {e}");
            std::process::exit(2);
        }
    };
    failover::init_logging(cfg.json_logs);
    // SIGHUP: the same flags, the config file read again.
    let reload = || match Flags::try_parse() {
        Ok(flags) => Config::from_flags(flags).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string().lines().next().unwrap_or("invalid arguments").to_string()),
    };
    if let Err(e) = failover::run(cfg, reload) {
        log::error!("{e}");
        std::process::exit(1);
    }
}
