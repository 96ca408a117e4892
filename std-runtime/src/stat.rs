//! `zerocast stat`: every topic of the namespace, who is attached, and how
//! far behind each subscriber is.

use std::sync::atomic::{fence, Ordering};

use zerocast_ipc::layout::{
    is_tombstone, load_name, now_ns, owner_alive, owner_pid, tombstone_taker, ORPHAN,
};
use zerocast_ipc::segment::{in_use, remove_unused, Removal};
use zerocast_ipc::{Bus, Segment};

fn age(ns: u64) -> String {
    let now = now_ns();
    if ns == 0 || ns > now {
        return "-".into();
    }
    format!("{:.1}s", (now - ns) as f64 / 1e9)
}

/// When the last heartbeat was: "never" for none yet.
fn heartbeat(ns: u64) -> String {
    if ns == 0 {
        "never".into()
    } else {
        format!("{} ago", age(ns))
    }
}

/// Describes a tombstone (an entry a reaper or a durable subscriber has
/// taken): who took it and whether it is still being worked on.
fn tombstone_line(what: &str, i: usize, word: u64) -> String {
    let taker = tombstone_taker(word);
    if owner_alive(taker) {
        format!(
            "  {what} {i}: TOMBSTONE taken by pid {} (alive: being reclaimed or taken over)",
            owner_pid(taker)
        )
    } else {
        format!(
            "  {what} {i}: TOMBSTONE taken by pid {} (DEAD: the next reap finishes it; --remove-stale does)",
            owner_pid(taker)
        )
    }
}

fn alive(word: u64) -> &'static str {
    if owner_alive(word) {
        "alive"
    } else {
        "DEAD"
    }
}

/// Drops the orphaned durable hold `name` on every topic of the namespace
/// that has one; says what it did. An error if there was none.
pub fn release_durable(bus: &Bus, name: &str) -> Result<(), String> {
    let mut found = false;
    for (topic, path) in bus.list_segments() {
        let seg = match Segment::open_with(&path, &topic, topic_access(bus, &topic)) {
            Ok(s) => s,
            Err(e) => {
                println!("{topic}: cannot open: {e}");
                continue;
            }
        };
        if let Some(position) = seg.release_durable(name) {
            println!("{topic}: dropped the durable hold {name:?} at {position}");
            found = true;
        }
    }
    if found {
        Ok(())
    } else {
        Err(format!(
            "no orphaned durable hold named {name:?} in namespace {} (a live durable subscriber keeps its hold: stop it first)",
            bus.config().namespace
        ))
    }
}

/// Prints the namespace's topics; with `remove_stale`, removes stale
/// segments (with their ack channels, and the bridge importers' origin
/// records of topics whose segment is gone), the counters table if no live
/// process uses it, and reclaims the entries of dead processes in segments still
/// in use (orphaned durable holds are kept: see [`release_durable`]).
pub fn run(bus: &Bus, remove_stale: bool) -> Result<(), String> {
    run_with(bus, remove_stale, false)
}

/// [`run`], and with `remove_other_layouts`, removes the segments (with
/// their ack channels) that a build of another layout made, once no
/// process maps them (after an upgrade: see docs/operating.md,
/// "Upgrading"). Not part of `remove_stale`: such a segment may keep frames
/// a killed recorder of that build had not logged, which only that build
/// can read.
pub fn run_with(bus: &Bus, remove_stale: bool, remove_other_layouts: bool) -> Result<(), String> {
    let segments = bus.list_segments();
    println!(
        "namespace {} ({} segments in /dev/shm)",
        bus.config().namespace,
        segments.len()
    );
    // Half-built files a creator killed mid-create left behind.
    for path in bus.abandoned_init_files() {
        if remove_stale {
            match std::fs::remove_file(&path) {
                Ok(()) => println!(
                    "removed a half-built file of a dead creator: {}",
                    path.display()
                ),
                Err(e) => println!("could not remove {}: {e}", path.display()),
            }
        } else {
            println!(
                "half-built file of a dead creator (--remove-stale removes it): {}",
                path.display()
            );
        }
    }
    // iceoryx2 topics have no zerocast segment: say they are configured
    // (their services are iceoryx2's, not listed here).
    let iox: Vec<&str> = bus
        .config()
        .topics
        .iter()
        .filter(|t| t.transport == zerocast_ipc::Transport::Iceoryx2)
        .map(|t| t.name.as_str())
        .collect();
    if !iox.is_empty() {
        println!(
            "iceoryx2 topics (configured; their services are iceoryx2's, not zerocast segments): {}",
            iox.join(", ")
        );
    }
    for (topic, path) in segments {
        let seg = match Segment::open_with(&path, &topic, topic_access(bus, &topic)) {
            Ok(s) => s,
            Err(e @ zerocast_ipc::Error::LayoutMismatch { found_version, .. }) => {
                println!("\n{topic}: cannot open: {e}");
                other_layout(bus, &topic, &path, found_version, remove_other_layouts);
                continue;
            }
            Err(e) => {
                println!("\n{topic}: cannot open: {e}");
                continue;
            }
        };
        let h = seg.header();
        let ring = seg.ring();
        let head = ring.head();
        let stale = seg.is_stale();
        println!(
            "\n{topic}: {} bytes, {} slots of {} bytes, head seq {head}, creator pid {} ({}){}",
            h.total_size,
            ring.capacity(),
            seg.slot_bytes(),
            owner_pid(h.creator),
            if owner_alive(h.creator) {
                "alive"
            } else {
                "gone"
            },
            if stale { "  STALE" } else { "" }
        );
        // Acquire: pairs with the Release owner stores of registrations.
        for (i, p) in h.publishers.iter().enumerate() {
            let word = p.pid.load(Ordering::Acquire);
            if word == 0 {
                continue;
            }
            if is_tombstone(word) {
                println!("{}", tombstone_line("publisher", i, word));
                continue;
            }
            let pid = owner_pid(word);
            // Relaxed: monitoring snapshots.
            let (name, published, beat) = (
                load_name(&p.name),
                p.published.load(Ordering::Relaxed),
                p.heartbeat_ns.load(Ordering::Relaxed),
            );
            // Acquire: pairs with the Release fence after the owner word's
            // compare-and-swap in a publisher's drop, a reap and a
            // registration: if a word read above is one their clears or
            // the next owner stored, the owner word is no longer `word`,
            // and the line would show a live publisher with the next
            // owner's (or no) name and count. Such an entry is printed as
            // changing instead. Not caught: the same process registering
            // again into the entry in between (the word reads the same).
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence above.
            if p.pid.load(Ordering::Relaxed) != word {
                println!("  publisher {i}: changing owner (read again for its state)");
                continue;
            }
            println!(
                "  publisher {i}: pid {pid} {} name {name:?} published {published} last heartbeat {}",
                alive(word),
                heartbeat(beat),
            );
        }
        for (i, s) in h.subscribers.iter().enumerate() {
            // Acquire: pairs with the Release owner stores of registration.
            let word = s.pid.load(Ordering::Acquire);
            if word == 0 || word == ORPHAN {
                continue;
            }
            if is_tombstone(word) {
                println!("{}", tombstone_line("subscriber", i, word));
                continue;
            }
            let pid = owner_pid(word);
            // Relaxed: monitoring snapshots.
            let next = s.cursor.load(Ordering::Relaxed);
            println!(
                "  subscriber {i}: pid {pid} {} name {:?} next {next} lag {} lagged-total {}{} seen {} ago",
                alive(word),
                load_name(&s.name),
                head.saturating_sub(next),
                s.lagged.load(Ordering::Relaxed),
                if s.gating.load(Ordering::Relaxed) != 0 { " gating" } else { "" },
                age(s.last_seen_ns.load(Ordering::Relaxed)),
            );
        }
        for hold in seg.durable_holds().iter().filter(|d| d.orphaned) {
            println!(
                "  durable hold {}: name {:?} at {} (no subscriber: publishers wait for it; drop it with --release-durable {})",
                hold.index,
                hold.name,
                hold.position.map_or("-".to_owned(), |p| p.to_string()),
                hold.name
            );
        }
        if remove_stale && !stale {
            let reaped = seg.reap_entries();
            if reaped.is_empty() {
                println!("  in use: no dead entries to reclaim");
            }
            for r in reaped {
                println!("  reclaimed {r}");
            }
        }
        if stale && remove_stale {
            // Unmapped first: our own lock would keep it in use. Only the
            // file judged here is removed.
            let identity = seg.file_id();
            drop(seg);
            // Its ack channel goes with it: its "acked up to" words count
            // this segment's sequences, and a new segment starts again at 0.
            let acks = bus.config().ack_path(&topic);
            let had_acks = acks.exists();
            match remove_unused(&[&path, &acks], Some(identity)) {
                Ok(Removal::Removed) => {
                    println!("  removed stale segment {}", path.display());
                    if had_acks {
                        println!("  removed its ack channel {}", acks.display());
                    }
                }
                Ok(Removal::InUse(i)) => println!(
                    "  not removed: a process maps {} (a monitor such as `zerocast health --watch`, or a process opening the topic now); run --remove-stale again once it has let go",
                    [&path, &acks][i].display()
                ),
                Ok(Removal::Gone) => println!("  removed or replaced by another process meanwhile"),
                Err(e) => println!("  could not remove it: {e}"),
            }
        }
    }
    origin_records(bus, remove_stale);
    // The counters table, once no live process uses it (entries of dead
    // recorders and batchers only).
    if remove_stale {
        let path = zerocast_ipc::counters::counters_path(bus.config());
        match zerocast_ipc::counters::CountersTable::remove_if_stale(&path) {
            Ok(true) => println!("removed stale counters table {}", path.display()),
            Ok(false) => {}
            Err(e) => println!("could not remove the counters table: {e}"),
        }
    }
    Ok(())
}

/// A segment another build made, of layout `version`: whether a process
/// maps it, and with `remove`, removed (with its ack channel) if none
/// does. Only a layout whose processes lock what they map
/// ([`FIRST_LOCKED_LAYOUT`](zerocast_ipc::layout::FIRST_LOCKED_LAYOUT) on)
/// can be told unused; an older one is left (the error above says so).
fn other_layout(bus: &Bus, topic: &str, path: &std::path::Path, version: u32, remove: bool) {
    if version < zerocast_ipc::layout::FIRST_LOCKED_LAYOUT {
        return;
    }
    let acks = bus.config().ack_path(topic);
    if !remove {
        match in_use(path) {
            Ok(true) => println!("  in use: a process (of that build) maps it"),
            Ok(false) => println!(
                "  no process maps it: --remove-other-layouts removes it (with any frames a killed recorder of that build had not logged)"
            ),
            Err(e) => println!("  could not tell whether a process maps it: {e}"),
        }
        return;
    }
    let had_acks = acks.exists();
    match remove_unused(&[path, &acks], None) {
        Ok(Removal::Removed) => {
            println!(
                "  removed the segment of layout v{version} {} (no process mapped it)",
                path.display()
            );
            if had_acks {
                println!("  removed its ack channel {}", acks.display());
            }
        }
        Ok(Removal::InUse(i)) => println!(
            "  not removed: a process (of that build) maps {}",
            [path, &acks][i].display()
        ),
        Ok(Removal::Gone) => println!("  removed or replaced by another process meanwhile"),
        Err(e) => println!("  could not remove {}: {e}", path.display()),
    }
}

/// The bridge importers' origin records of topics whose segment is gone
/// (removed as stale above, or earlier): such a record names a far-side
/// segment that no longer exists, so no importer can ever use it again.
/// Listed; with `remove_stale`, removed. A record whose segment exists
/// (in use, or kept) stays: its importer may be running.
fn origin_records(bus: &Bus, remove_stale: bool) {
    for line in origin_records_with(bus, remove_stale, |p| std::fs::symlink_metadata(p)) {
        println!("{line}");
    }
}

/// [`origin_records`], with the look at a topic's segment path passed in
/// (`symlink_metadata`: whatever is at the path keeps the record, even a
/// file `stat` could not open), returning the lines to print. Only
/// `NotFound` means the segment is gone; any other error leaves the record
/// and is reported.
fn origin_records_with(
    bus: &Bus,
    remove_stale: bool,
    look: impl Fn(&std::path::Path) -> std::io::Result<std::fs::Metadata>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (topic, path) in crate::bridge_records::origin_records(bus.config()) {
        let segment = bus.config().segment_path(&topic);
        match look(&segment) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                // Kept either way; only `--remove-stale` decides to keep it.
                let (kept, note) = if remove_stale {
                    ("kept the ", "")
                } else {
                    ("", " (--remove-stale keeps it)")
                };
                lines.push(format!(
                    "{kept}bridge origin record of topic {topic} ({}): could not tell \
                     whether its segment {} exists: {e}{note}",
                    path.display(),
                    segment.display()
                ));
                continue;
            }
        }
        if remove_stale {
            match std::fs::remove_file(&path) {
                Ok(()) => lines.push(format!(
                    "removed the bridge origin record of gone topic {topic}: {}",
                    path.display()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => lines.push(format!("could not remove {}: {e}", path.display())),
            }
        } else {
            lines.push(format!(
                "bridge origin record of gone topic {topic} (--remove-stale removes it): {}",
                path.display()
            ));
        }
    }
    lines
}

/// A listed segment's topic's `mode` and `group` (the default, private, for
/// a segment of a topic not configured): how far its file is trusted.
fn topic_access(bus: &Bus, topic: &str) -> zerocast_ipc::config::Access {
    bus.config()
        .topic(topic)
        .map(|t| t.access)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review: `stat --remove-stale` took any error of the look at a
    /// topic's segment path (`symlink_metadata`) for "segment gone" and
    /// removed the bridge origin record of a topic whose segment may well
    /// exist (an importer restarted against it would then take a
    /// recreated origin for the old one). Only `NotFound` means gone; any
    /// other error keeps the record (and is reported).
    #[test]
    fn regression_remove_stale_took_any_stat_error_for_a_gone_segment() {
        let bus = Bus::new(zerocast_ipc::Config {
            namespace: format!("statlook{}", std::process::id()),
            topics: Vec::new(),
        });
        let record = crate::bridge_records::origin_record_path(bus.config(), "trades");
        std::fs::write(&record, "far=1-2-3 origin=4-5-6\n").unwrap();
        let _ = origin_records_with(&bus, true, |_| {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        });
        let kept = record.exists();
        let _ = std::fs::remove_file(&record);
        assert!(
            kept,
            "a record was removed although its segment could not be looked at"
        );
        // NotFound still means gone.
        std::fs::write(&record, "far=1-2-3 origin=4-5-6\n").unwrap();
        let _ = origin_records_with(&bus, true, |_| {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        });
        let kept = record.exists();
        let _ = std::fs::remove_file(&record);
        assert!(!kept, "the record of a gone segment was kept");
    }

    /// Issue 14, closing note: `zerocast stat` without `--remove-stale`
    /// said "kept the bridge origin record" of a record whose segment it
    /// could not look at, a decision it takes only with `--remove-stale`:
    /// without, it only lists the record. Each mode now says what it did,
    /// and the record stays in both.
    #[test]
    fn regression_stat_said_it_kept_an_origin_record_it_only_listed() {
        let bus = Bus::new(zerocast_ipc::Config {
            namespace: format!("statmode{}", std::process::id()),
            topics: Vec::new(),
        });
        let record = crate::bridge_records::origin_record_path(bus.config(), "trades");
        std::fs::write(&record, "far=1-2-3 origin=4-5-6\n").unwrap();
        let denied = |_: &std::path::Path| -> std::io::Result<std::fs::Metadata> {
            Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
        };
        let listed = origin_records_with(&bus, false, denied);
        let listed_left = record.exists();
        let removing = origin_records_with(&bus, true, denied);
        let removing_left = record.exists();
        let _ = std::fs::remove_file(&record);
        let shown = record.display().to_string();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert!(
            !listed[0].contains("kept the") && listed[0].contains("--remove-stale keeps it"),
            "stat without --remove-stale: {:?}",
            listed[0]
        );
        assert!(
            listed[0].starts_with("bridge origin record of topic trades")
                && listed[0].contains(&shown)
                && listed[0].contains("could not tell whether its segment"),
            "stat without --remove-stale: {:?}",
            listed[0]
        );
        assert!(
            listed_left,
            "stat without --remove-stale removed the record"
        );
        assert_eq!(removing.len(), 1, "{removing:?}");
        assert!(
            removing[0].starts_with("kept the bridge origin record of topic trades")
                && removing[0].contains(&shown),
            "stat --remove-stale: {:?}",
            removing[0]
        );
        assert!(removing_left, "stat --remove-stale removed the record");
    }
}
