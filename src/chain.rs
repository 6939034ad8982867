//! The upstream chain as configured: the primary, then the backups in order, each with its
//! own options (TLS, Host, a directory's sorry status), from flags and from the YAML
//! `backup` list, checked once at start. Errors name the flag or YAML item at fault.
//!
//! Nothing here runs after start-up; [`crate::config`] calls it while building the
//! configuration.

use std::sync::Arc;

use crate::error::{err, Error};
use crate::static_files::Site;
use crate::tls::UpstreamTls;
use crate::upstream::{self, HostPolicy, Kind, Origin, Upstream, MAX_UPSTREAMS};

/// One upstream as configured, before it is checked.
#[derive(Debug, Default)]
pub struct Spec {
    /// Where it was set, for errors: `Some(n)` is item n of the YAML `backup` list.
    pub item: Option<usize>,
    pub url: String,
    pub ca: Option<String>,
    pub insecure: bool,
    pub sni: Option<String>,
    pub host_header: Option<String>,
    pub status: Option<u16>,
    pub sorry_page: Option<String>,
}

/// The `backup` key of the YAML file: a URL, or a list of URLs and objects.
pub fn backup_specs(v: serde_yaml::Value) -> Result<Vec<Spec>, Error> {
    use serde_yaml::Value;
    let key = |i: usize, field: &str, what: &str| err("config", format!("backup item {i}: {field}: {what}"));
    let items = match v {
        Value::String(url) => return Ok(vec![Spec { url, ..Spec::default() }]),
        Value::Sequence(items) => items,
        _ => return Err(err("config", "backup: must be a URL or a list of URLs and {url, ...} entries")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let i = i + 1;
        let map = match item {
            Value::String(url) => {
                out.push(Spec { item: Some(i), url, ..Spec::default() });
                continue;
            }
            Value::Mapping(map) => map,
            _ => return Err(err("config", format!("backup item {i}: must be a URL or {{url, ...}}"))),
        };
        let mut spec = Spec { item: Some(i), ..Spec::default() };
        for (k, v) in map {
            let field = k.as_str().unwrap_or("?").to_string();
            let text = |v: &Value| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(key(i, &field, "must be a string")),
            };
            match field.as_str() {
                "url" => spec.url = text(&v)?,
                "ca" => spec.ca = Some(text(&v)?),
                "sni" => spec.sni = Some(text(&v)?),
                "host_header" => spec.host_header = Some(text(&v)?),
                "sorry_page" => spec.sorry_page = Some(text(&v)?),
                "insecure" => spec.insecure = v.as_bool().ok_or_else(|| key(i, &field, "must be true or false"))?,
                "status" => {
                    let n = v.as_u64().and_then(|n| u16::try_from(n).ok());
                    spec.status = Some(n.ok_or_else(|| key(i, &field, "must be a status code like 503"))?);
                }
                _ => {
                    return Err(key(i, &field, "unknown key (url, ca, sni, host_header, insecure, status, sorry_page)"))
                }
            }
        }
        if spec.url.is_empty() {
            return Err(key(i, "url", "is required"));
        }
        out.push(spec);
    }
    Ok(out)
}

/// Checks and builds the chain: the primary, then the backups. Options given for all
/// backups (`--backup-ca`, ...) apply to each backup they fit, unless the backup's own
/// entry sets them.
pub fn chain(primary: Spec, backups: Vec<Spec>, all: Spec) -> Result<Vec<Upstream>, Error> {
    if backups.is_empty() {
        return Err(err("backup", "is required (an http://, https:// or file:// URL)"));
    }
    if backups.len() >= MAX_UPSTREAMS {
        return Err(err("backup", format!("{} backups is too many (at most {})", backups.len(), MAX_UPSTREAMS - 1)));
    }
    if upstream::file_path(&primary.url).is_some() {
        return Err(err("primary", format!("{:?}: a directory (file://) can only be a backup", primary.url)));
    }
    let mut out = vec![build(0, primary)?];
    let mut used = [false; 4];
    for (i, mut spec) in backups.into_iter().enumerate() {
        let index = i + 1;
        let https = spec.url.trim().starts_with("https://");
        let site = upstream::file_path(&spec.url).is_some();
        // (value for all backups, whether it fits this one)
        if https {
            used[0] |= fill(&mut spec.ca, &all.ca);
            used[1] |= fill(&mut spec.sni, &all.sni);
            spec.insecure |= all.insecure;
            used[2] |= all.insecure;
        }
        if !site {
            used[3] |= fill(&mut spec.host_header, &all.host_header);
        } else {
            spec.status = spec.status.or(all.status);
            if spec.sorry_page.is_none() {
                spec.sorry_page.clone_from(&all.sorry_page);
            }
        }
        out.push(build(index, spec)?);
    }
    let sites = out.iter().any(|u| u.site().is_some());
    let checks: [(bool, bool, &str, &str); 6] = [
        (all.ca.is_some(), used[0], "backup-ca", "an https:// backup"),
        (all.sni.is_some(), used[1], "backup-sni", "an https:// backup"),
        (all.insecure, used[2], "backup-insecure", "an https:// backup"),
        (all.host_header.is_some(), used[3], "backup-host-header", "an http(s):// backup"),
        (all.status.is_some(), sites, "backup-status", "a file:// backup"),
        (all.sorry_page.is_some(), sites, "sorry-page", "a file:// backup with --backup-status"),
    ];
    for (given, fits, key, what) in checks {
        if given && !fits {
            return Err(err(key, format!("only applies to {what}")));
        }
    }
    Ok(out)
}

/// `slot` takes `all`'s value if it has none of its own; returns whether `all` has one.
fn fill(slot: &mut Option<String>, all: &Option<String>) -> bool {
    if slot.is_none() {
        slot.clone_from(all);
    }
    all.is_some()
}

/// Parses the upstream at `index` of the chain with its options. Errors name the flag
/// (`--primary-ca`, `--backup: backup2: ...`) or the YAML list item it came from.
fn build(index: usize, s: Spec) -> Result<Upstream, Error> {
    let name = upstream::name_of(index);
    let role = if index == 0 { "primary" } else { "backup" };
    let which = if index > 1 { format!("{name}: ") } else { String::new() };
    let fail = |field: &str, what: String| match s.item {
        Some(n) => Error(format!("--config: backup item {n}: {}: {what}", field.replace('-', "_"))),
        None => Error(format!("--{role}-{field}: {which}{what}")),
    };
    let url_error = |what: String| match s.item {
        Some(n) => Error(format!("--config: backup item {n}: {what}")),
        None => Error(format!("--{role}: {which}{what}")),
    };
    let url = s.url.trim().to_string();
    if let Some(path) = upstream::file_path(&url) {
        let path = path.map_err(&url_error)?;
        for (set, field) in [(s.ca.is_some(), "ca"), (s.insecure, "insecure"), (s.sni.is_some(), "sni")] {
            if set {
                return Err(fail(field, "only applies to an https:// upstream".into()));
            }
        }
        if s.host_header.is_some() {
            return Err(fail("host-header", "only applies to an http(s):// upstream".into()));
        }
        if let Some(st) = s.status.filter(|st| !(200..=599).contains(st)) {
            return Err(fail("status", format!("{st} must be a status between 200 and 599")));
        }
        if s.sorry_page.is_some() && s.status.is_none() {
            return Err(fail("sorry-page", "needs --backup-status (the status the page is served with)".into()));
        }
        let site = Site::open(std::path::Path::new(path), s.status, s.sorry_page.as_deref()).map_err(&url_error)?;
        return Ok(Upstream { url, name, kind: Kind::Site(site) });
    }
    if s.status.is_some() || s.sorry_page.is_some() {
        let field = if s.status.is_some() { "status" } else { "sorry-page" };
        return Err(fail(field, "only applies to a file:// backup".into()));
    }
    let mut o = Origin::parse(&url).map_err(&url_error)?;
    if let Some(h) = s.host_header {
        o.host_header = HostPolicy::parse(&h).map_err(|e| fail("host-header", e))?;
    }
    if !o.tls {
        for (set, field) in [(s.ca.is_some(), "ca"), (s.insecure, "insecure"), (s.sni.is_some(), "sni")] {
            if set {
                return Err(fail(
                    field,
                    format!("only applies to an https:// {}", if index == 0 { "primary" } else { "backup" }),
                ));
            }
        }
        return Ok(Upstream { url, name, kind: Kind::Origin(o) });
    }
    let sni = s.sni.unwrap_or_else(|| o.host.trim_start_matches('[').trim_end_matches(']').to_string());
    let tls = UpstreamTls::new(&sni, s.ca.as_deref(), s.insecure).map_err(|e| {
        if e.contains("server name") {
            fail("sni", e)
        } else {
            fail("ca", e)
        }
    })?;
    o.tls_client = Some(Arc::new(tls));
    o.insecure = s.insecure;
    Ok(Upstream { url, name, kind: Kind::Origin(o) })
}
