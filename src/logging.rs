//! Log output: plain lines, or one JSON object per line with `--json-logs`.
//!
//! The level comes from `RUST_LOG` (default `info`). Nothing else in the crate formats logs.

use std::io::Write;

use crate::answer::json_str;

pub fn init(json: bool) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if json {
        b.format(|buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(
                buf,
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"target\":{},\"msg\":{}}}",
                record.level(),
                json_str(record.target()),
                json_str(&record.args().to_string())
            )
        });
    } else {
        b.format(|buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(buf, "{ts} {:<5} {}", record.level(), record.args())
        });
    }
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}
