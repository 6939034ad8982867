//! Log output: plain lines, or one JSON object per line with `--json-logs`, where the
//! structured fields a log call carries (`event`, `upstream`, `reason`, `worker`, ...) are
//! fields of the object, not only words in `msg`.
//!
//! The level comes from `RUST_LOG` (default `info`). Nothing else in the crate formats logs.

use std::io::Write;

use crate::answer::json_str;

pub fn init(json: bool) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if json {
        b.format(|buf, record| {
            let ts = buf.timestamp_millis();
            let mut fields = Fields(String::new());
            let _ = record.key_values().visit(&mut fields);
            writeln!(
                buf,
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"target\":{},\"msg\":{}{}}}",
                record.level(),
                json_str(record.target()),
                json_str(&record.args().to_string()),
                fields.0
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

/// The structured fields of a record as `,"key":value` pairs (numbers and booleans bare,
/// everything else a JSON string).
struct Fields(String);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        let text = match (value.to_u64(), value.to_i64(), value.to_bool()) {
            (Some(n), _, _) => n.to_string(),
            (None, Some(n), _) => n.to_string(),
            (None, None, Some(b)) => b.to_string(),
            _ => json_str(&value.to_string()),
        };
        self.0.push_str(&format!(",{}:{text}", json_str(key.as_str())));
        Ok(())
    }
}
