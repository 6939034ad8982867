//! The `failover` binary: flags and YAML → [`Config`], logging, then the workers.

use clap::Parser;

use failover::config::{Config, Flags};

fn main() {
    let flags = Flags::parse();
    let cfg = match Config::from_flags(flags) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("failover: {e}");
            std::process::exit(2);
        }
    };
    failover::logging::init(cfg.json_logs);
    if let Err(e) = failover::server::run(cfg) {
        log::error!("{e}");
        std::process::exit(1);
    }
}
