//! `zerocast stat`: every topic of the namespace, who is attached, and how
//! far behind each subscriber is.

use std::sync::atomic::Ordering;

use zerocast_ipc::layout::{load_name, now_ns, pid_alive};
use zerocast_ipc::{Bus, Segment};

fn age(ns: u64) -> String {
    let now = now_ns();
    if ns == 0 || ns > now {
        return "-".into();
    }
    format!("{:.1}s", (now - ns) as f64 / 1e9)
}

/// Prints the namespace's topics; with `remove_stale`, removes stale segments.
pub fn run(bus: &Bus, remove_stale: bool) -> Result<(), String> {
    let segments = bus.list_segments();
    println!(
        "namespace {} ({} segments in /dev/shm)",
        bus.config().namespace,
        segments.len()
    );
    for (topic, path) in segments {
        let seg = match Segment::open(&path, &topic) {
            Ok(s) => s,
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
            h.creator_pid,
            if pid_alive(h.creator_pid) {
                "alive"
            } else {
                "gone"
            },
            if stale { "  STALE" } else { "" }
        );
        // Acquire: pairs with the Release pid stores of registrations.
        for (i, p) in h.publishers.iter().enumerate() {
            let pid = p.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            // Relaxed: monitoring snapshots.
            println!(
                "  publisher {i}: pid {pid} {} name {:?} published {} last heartbeat {} ago",
                if pid_alive(pid) { "alive" } else { "DEAD" },
                load_name(&p.name),
                p.published.load(Ordering::Relaxed),
                age(p.heartbeat_ns.load(Ordering::Relaxed)),
            );
        }
        for (i, s) in h.subscribers.iter().enumerate() {
            let pid = s.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            // Relaxed: monitoring snapshots.
            let next = s.cursor.load(Ordering::Relaxed);
            println!(
                "  subscriber {i}: pid {pid} {} name {:?} next {next} lag {} lagged-total {}{} seen {} ago",
                if pid_alive(pid) { "alive" } else { "DEAD" },
                load_name(&s.name),
                head.saturating_sub(next),
                s.lagged.load(Ordering::Relaxed),
                if s.gating.load(Ordering::Relaxed) != 0 { " gating" } else { "" },
                age(s.last_seen_ns.load(Ordering::Relaxed)),
            );
        }
        if stale && remove_stale {
            match std::fs::remove_file(&path) {
                Ok(()) => println!("  removed stale segment {}", path.display()),
                Err(e) => println!("  could not remove {}: {e}", path.display()),
            }
        }
    }
    Ok(())
}
