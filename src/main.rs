//! The `failover` binary: flags and YAML → [`Config`], logging, then the workers.

use clap::Parser;

use failover::{Command, Config, Flags};

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
    if let Some(Command::Probe { url, timeout }) = &flags.command {
        let timeout = match failover::parse_duration(timeout) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("failover probe: --timeout: {timeout:?} {e}");
                std::process::exit(2);
            }
        };
        match failover::probe(url, timeout) {
            Ok(status) => println!("{url}: {status}"),
            Err(why) => {
                eprintln!("failover probe: {url}: {why}");
                std::process::exit(1);
            }
        }
        return;
    }
    failover::raise_nofile_limit();
    let check = flags.check_config;
    let cfg = match Config::from_flags(flags) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("failover: {e}");
            std::process::exit(2);
        }
    };
    if check {
        print!("{}", failover::effective_config(&cfg));
        return;
    }
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
