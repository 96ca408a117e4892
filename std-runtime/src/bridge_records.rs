//! The bridge importer's origin records (see
//! `bridge::import`): where they live, and which exist. Built without the
//! `bridge` feature too, so that `zerocast stat --remove-stale` of such a
//! build still lists and removes those an importer of another build left.

use std::path::PathBuf;

/// Where the importer of `topic` on `config`'s namespace records the
/// origin it follows: `/dev/shm/zerocast-bridge.<namespace>.<topic>`
/// (mode 0600), a line `far=IDENTITY origin=IDENTITY`. The record counts
/// only while the far-side segment is the one named (a recreated far-side
/// topic starts afresh); nothing else reads it.
pub fn origin_record_path(config: &zerocast_ipc::Config, topic: &str) -> PathBuf {
    zerocast_ipc::config::shm_dir().join(format!("zerocast-bridge.{}.{topic}", config.namespace))
}

/// The origin records ([`origin_record_path`]) of `config`'s namespace in
/// `/dev/shm`, each with its topic, sorted. A record's temporary file that
/// a killed importer left (`<record>.tmp`, see `write_record`) is listed
/// under its topic too. `zerocast stat --remove-stale` removes those whose
/// topic's segment is gone.
pub fn origin_records(config: &zerocast_ipc::Config) -> Vec<(String, PathBuf)> {
    let prefix = format!("zerocast-bridge.{}.", config.namespace);
    let mut found: Vec<_> = std::fs::read_dir(zerocast_ipc::config::shm_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&prefix)?;
            let topic = rest.strip_suffix(".tmp").unwrap_or(rest);
            // Topic names have no dots: anything else is not a record.
            zerocast_ipc::config::check_name(topic).ok()?;
            Some((topic.to_owned(), e.path()))
        })
        .collect();
    found.sort();
    found
}
