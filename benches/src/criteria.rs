//! Issue 14's "done when" targets, judged from one `harness all` report:
//! every target gets the figures it was judged on, its threshold and a
//! verdict (`met` true or false), or `met: null` with what was missing
//! when the run did not measure it. Nothing here measures: it reads the
//! report, so the same run's figures are held against each other.
//!
//! The targets, as issue 14 states them (measured in one run, interleaved):
//!
//! - `ring_vs_rtrb`: the broadcast ring, 1 producer -> 1 consumer thread,
//!   trade frames, single publishes, at least rtrb's rate for the same
//!   frames (each ring kind's median over rtrb's, interleaved runs);
//! - `publish_vs_raw`: `Publisher::publish(&TradeEvent)` across processes,
//!   1 -> 1, at least 0.8x the raw ring of the same run and above 10 M
//!   frames/s: the median over interleaved rounds of each round's ratio
//!   (judged on the default, multi-producer topic; the single-producer
//!   topic is reported beside it);
//! - `pingpong_x_floor`: ping-pong one-way p50 of a 160 B trade frame
//!   (`publish(&T)` and busy-polling receive) at most 1.8x the
//!   core-to-core floor of the same run (not judged when the floor
//!   measured again after the ping-pongs moved by more than [`FLOOR_DRIFT`]);
//! - `wake_no_spin`: a blocking subscriber with no spin, one-way p50 at
//!   most 1.2x the bare futex pair and at most iceoryx2's Listener (not
//!   judged when the futex pair's p50 was no sleep: see [`SLEEP_NS`]);
//! - `fanout_flat`: the publisher's cost (p50) from 1 to 1000
//!   subscribers: the largest p50 at most 1.5x the smallest (and the
//!   1000-subscriber case run);
//! - `iox_plain_vs_upstream`: not judged here (it needs iceoryx2's own
//!   programs: `benches/iox-own.sh`), reported as not measured.

use serde_json::{json, Value};

/// The least multiple of the raw ring's rate `publish(&T)` must keep.
pub const PUBLISH_X_RAW: f64 = 0.8;
/// The least publish rate, frames per second.
pub const PUBLISH_MIN_RATE: f64 = 10e6;
/// The largest ping-pong one-way p50 as a multiple of the floor.
pub const PINGPONG_X_FLOOR: f64 = 1.8;
/// The largest no-spin wake-up p50 as a multiple of the futex pair's.
pub const WAKE_X_FUTEX: f64 = 1.2;
/// The most the floor measured after the ping-pongs may differ from the
/// one before (either way) for the ping-pong to be judged against it.
pub const FLOOR_DRIFT: f64 = 1.5;
/// A futex pair's p50 below this was no sleep (a wake from `FUTEX_WAIT`
/// takes microseconds; an answer already there, hundreds of ns).
pub const SLEEP_NS: f64 = 1_000.0;
/// The largest spread of the publisher's p50 over the fan-out counts.
pub const FANOUT_SPREAD: f64 = 1.5;

/// Every target's verdict from `report` (a `harness all` results.json).
pub fn evaluate(report: &Value) -> Value {
    json!([
        ring_vs_rtrb(report),
        publish_vs_raw(report),
        pingpong_x_floor(report),
        wake_no_spin(report),
        fanout_flat(report),
        {
            "target": "iox_plain_vs_upstream",
            "wants": "the harness's plain-iceoryx2 rows within 20% of iceoryx2's own benchmark programs",
            "met": null,
            "missing": "not measured by the harness: run benches/iox-own.sh",
        },
    ])
}

/// Why the ratio suites (the interleaved rounds and the rings) cannot be
/// judged: the floor measured before them and after them differ by more
/// than [`FLOOR_DRIFT`] (the vCPUs moved), or either is missing.
fn placement_moved(report: &Value) -> Option<String> {
    let p = &report["ratio_placement"];
    match (p["floor_before_ns"].as_f64(), p["floor_after_ns"].as_f64()) {
        (Some(b), Some(a)) if b > 0.0 && a > 0.0 && a.max(b) <= FLOOR_DRIFT * a.min(b) => None,
        (Some(b), Some(a)) => Some(format!(
            "the floor moved during the ratio suites ({b:.0} ns before, {a:.0} ns after): the vCPUs changed placement"
        )),
        _ => Some("no floor measured around the ratio suites".into()),
    }
}

/// A target not judged: `missing` says what the report lacked.
fn not_measured(target: &str, wants: &str, missing: &str) -> Value {
    json!({ "target": target, "wants": wants, "met": null, "missing": missing })
}

fn ring_vs_rtrb(report: &Value) -> Value {
    let wants = "broadcast ring 1 -> 1 thread, trade frames, single publishes: at least rtrb's rate (x_rtrb >= 1)";
    let Some(cases) = report["rings"]["cases"].as_array() else {
        return not_measured("ring_vs_rtrb", wants, "no ring comparison in this run");
    };
    let broadcast: Vec<&Value> = cases
        .iter()
        .filter(|c| {
            c["case"]
                .as_str()
                .is_some_and(|n| n.starts_with("broadcast"))
        })
        .collect();
    let rings: Vec<(&str, f64)> = broadcast
        .iter()
        .filter_map(|c| Some((c["case"].as_str()?, c["x_rtrb"].as_f64()?)))
        .filter(|(_, x)| x.is_finite() && *x > 0.0)
        .collect();
    let expected = crate::rings::HARNESS_CASES
        .iter()
        .filter(|c| c.starts_with("broadcast"))
        .count();
    if rings.is_empty() || rings.len() < broadcast.len() || broadcast.len() < expected {
        return not_measured(
            "ring_vs_rtrb",
            wants,
            "a broadcast case without a ratio to rtrb",
        );
    }
    if let Some(moved) = placement_moved(report) {
        return not_measured("ring_vs_rtrb", wants, &moved);
    }
    let mut figures: serde_json::Map<String, Value> = rings
        .iter()
        .map(|(n, x)| (n.to_string(), json!(x)))
        .collect();
    figures.insert(
        "floor_ns".into(),
        report["ratio_placement"]["floor_before_ns"].clone(),
    );
    json!({
        "target": "ring_vs_rtrb",
        "wants": wants,
        "figures": figures,
        "met": rings.iter().all(|(_, x)| *x >= 1.0),
    })
}

fn publish_vs_raw(report: &Value) -> Value {
    let wants = "Publisher::publish(&T) across processes 1 -> 1: at least 0.8x the raw ring's rate (median of interleaved rounds) and above 10 M frames/s (default topic; single-producer beside it)";
    let rows = &report["throughput_interleaved"]["rows"];
    let (Some(x), Some(rate)) = (
        rows["shm"]["x_raw_median"].as_f64(),
        rows["shm"]["frames_per_s_median"].as_f64(),
    ) else {
        return not_measured(
            "publish_vs_raw",
            wants,
            "no interleaved rounds of `shm` against `shm-raw`",
        );
    };
    let rounds = report["throughput_interleaved"]["rounds"]
        .as_u64()
        .unwrap_or(0);
    let counted = rows["shm"]["x_raw_counted"].as_u64().unwrap_or(0);
    if rounds == 0 || 2 * counted <= rounds {
        return not_measured(
            "publish_vs_raw",
            wants,
            &format!("{counted} of {rounds} interleaved rounds had a rate for both rows"),
        );
    }
    if let Some(moved) = placement_moved(report) {
        return not_measured("publish_vs_raw", wants, &moved);
    }
    let mut figures = json!({
        "shm_x_raw": x,
        "shm_frames_per_s": rate,
        "rounds_counted": counted,
        "floor_ns": report["ratio_placement"]["floor_before_ns"],
    });
    if let (Some(sx), Some(srate)) = (
        rows["shm-single"]["x_raw_median"].as_f64(),
        rows["shm-single"]["frames_per_s_median"].as_f64(),
    ) {
        figures["shm_single_x_raw"] = json!(sx);
        figures["shm_single_frames_per_s"] = json!(srate);
    }
    json!({
        "target": "publish_vs_raw",
        "wants": wants,
        "figures": figures,
        "met": x >= PUBLISH_X_RAW && rate > PUBLISH_MIN_RATE,
    })
}

fn pingpong_x_floor(report: &Value) -> Value {
    let wants = "ping-pong one-way p50, 160 B trade frame, publish(&T) and busy-poll: at most 1.8x the core-to-core floor";
    let shm = report["pingpong"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["transport"] == "shm"));
    let (Some(p50), Some(floor)) = (
        shm.and_then(|r| r["one_way_p50_ns"].as_f64()),
        report["floor"]["one_way_p50_ns"].as_f64(),
    ) else {
        return not_measured("pingpong_x_floor", wants, "no floor or no `shm` ping-pong");
    };
    if !(p50 > 0.0 && floor > 0.0) {
        return not_measured("pingpong_x_floor", wants, "a ping-pong or floor p50 of 0");
    }
    let x = p50 / floor;
    // A floor measured again after the ping-pongs that differs by more
    // than half from the first: the vCPUs moved in between, and the row
    // may have run at another placement than the floor it is held to.
    let after = report["floor_after"]["one_way_p50_ns"]
        .as_f64()
        .unwrap_or(0.0);
    // (`floor` is above 0: checked above.)
    if after <= 0.0 || after.max(floor) > FLOOR_DRIFT * after.min(floor) {
        return not_measured(
            "pingpong_x_floor",
            wants,
            &format!(
                "the floor moved during the ping-pongs ({floor:.0} ns before, {after:.0} ns \
                 after): the vCPUs changed placement; shm p50 {p50:.0} ns"
            ),
        );
    }
    json!({
        "target": "pingpong_x_floor",
        "wants": wants,
        "figures": { "floor_p50_ns": floor, "shm_p50_ns": p50, "shm_x_floor": x },
        "met": x <= PINGPONG_X_FLOOR,
    })
}

fn wake_no_spin(report: &Value) -> Value {
    let wants = "blocking subscriber, no spin, one-way p50: at most 1.2x the bare futex pair and at most iceoryx2's Listener";
    // A field of the wake-up row of transport `t`.
    let row = |t, field: &str| {
        report["wake"]
            .as_array()?
            .iter()
            .find(|r| r["transport"] == t)?[field]
            .as_f64()
    };
    let p50 = |t| row(t, "one_way_p50_ns");
    let (Some(futex), Some(shm), Some(iox)) = (p50("futex"), p50("shm"), p50("iox-plain")) else {
        return not_measured(
            "wake_no_spin",
            wants,
            "a wake-up row (futex, shm or iox-plain) is missing",
        );
    };
    if futex < SLEEP_NS || shm < SLEEP_NS {
        // Sleeping is bimodal on a small guest: when each answer is there
        // before the other side gets into the kernel, a round costs a few
        // hundred ns, and a p50 in that mode compares waits that did not
        // sleep. No floor for a wake from sleep, then.
        let mean = |t| row(t, "one_way_mean_ns");
        let means = match (mean("futex"), mean("shm")) {
            (Some(f), Some(s)) if f > 0.0 => format!("; means: shm {:.2}x the futex pair's", s / f),
            _ => String::new(),
        };
        return not_measured(
            "wake_no_spin",
            wants,
            &format!(
                "a p50 under {SLEEP_NS:.0} ns is no wake from sleep (futex pair {futex:.0} ns, zerocast \
                 {shm:.0} ns): this run's p50s compare waits that found their answer{means}"
            ),
        );
    }
    json!({
        "target": "wake_no_spin",
        "wants": wants,
        "figures": {
            "futex_p50_ns": futex,
            "shm_p50_ns": shm,
            "iox_listener_p50_ns": iox,
            "shm_x_futex": shm / futex,
        },
        "met": shm / futex <= WAKE_X_FUTEX && shm <= iox,
    })
}

fn fanout_flat(report: &Value) -> Value {
    let wants =
        "publish cost (p50) flat from 1 to 1000 subscribers: largest p50 at most 1.5x the smallest";
    let failed = report["fanout"].as_array().into_iter().flatten().any(|r| {
        r["case"]
            .as_str()
            .is_some_and(|c| c.starts_with("fanout shm"))
    });
    if failed {
        return not_measured("fanout_flat", wants, "an `shm` fan-out case failed");
    }
    let short = report["fanout"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["transport"] == "shm" && r["subscribers_reporting"] != r["subscribers"]);
    if short {
        return not_measured(
            "fanout_flat",
            wants,
            "an `shm` fan-out case with subscribers that did not report",
        );
    }
    let points: Vec<(u64, f64)> = report["fanout"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["transport"] == "shm")
        .filter_map(|r| Some((r["subscribers"].as_u64()?, r["publish"]["p50_ns"].as_f64()?)))
        .collect();
    if !points.iter().any(|(n, _)| *n == 1) || !points.iter().any(|(n, _)| *n >= 1000) {
        return not_measured(
            "fanout_flat",
            wants,
            "no `shm` fan-out case with 1 and with 1000 subscribers",
        );
    }
    let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let figures: serde_json::Map<String, Value> = points
        .iter()
        .map(|(n, p)| (format!("p50_ns_{n}_subscribers"), json!(p)))
        .collect();
    json!({
        "target": "fanout_flat",
        "wants": wants,
        "figures": figures,
        "met": min > 0.0 && max <= FANOUT_SPREAD * min,
    })
}

/// The verdicts as a markdown table.
pub fn markdown(criteria: &Value) -> String {
    let mut md = String::from(
        "**Issue 14's targets, judged on this run** (`met`: yes, no, or not measured)\n\n\
         | target | wants | this run | met |\n|---|---|---|---|\n",
    );
    for c in criteria.as_array().into_iter().flatten() {
        let figures = c["figures"]
            .as_object()
            .map(|f| {
                f.iter()
                    .map(|(k, v)| match v.as_f64() {
                        Some(x) if x.abs() >= 1e6 => format!("{k} {:.2} M", x / 1e6),
                        Some(x) => format!("{k} {x:.2}"),
                        None => format!("{k} {v}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| c["missing"].as_str().unwrap_or_default().to_string());
        let met = match c["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            c["target"].as_str().unwrap_or_default(),
            c["wants"].as_str().unwrap_or_default(),
            figures,
            met
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with every target's figures, each on the passing side.
    fn passing() -> Value {
        json!({
            "floor": { "one_way_p50_ns": 100.0 },
            "floor_after": { "one_way_p50_ns": 110.0 },
            "pingpong": [{ "transport": "shm", "one_way_p50_ns": 170.0, "p50_x_floor": 1.7 }],
            "wake": [
                { "transport": "futex", "one_way_p50_ns": 10000.0 },
                { "transport": "shm", "one_way_p50_ns": 11000.0 },
                { "transport": "iox-plain", "one_way_p50_ns": 15000.0 },
            ],
            "fanout": [
                { "transport": "shm", "subscribers": 1, "subscribers_reporting": 1, "publish": { "p50_ns": 60.0 } },
                { "transport": "iox", "subscribers": 1, "publish": { "p50_ns": 9000.0 } },
                { "transport": "shm", "subscribers": 1000, "subscribers_reporting": 1000, "publish": { "p50_ns": 80.0 } },
            ],
            "throughput_interleaved": { "rounds": 3, "rows": {
                "shm-raw": { "frames_per_s_median": 50e6 },
                "shm": { "x_raw_median": 0.84, "frames_per_s_median": 42e6, "x_raw_counted": 2 },
            }},
            "ratio_placement": { "floor_before_ns": 20.0, "floor_after_ns": 25.0 },
            "rings": { "cases": [
                { "case": "broadcast overwriting", "x_rtrb": 2.5 },
                { "case": "broadcast gating", "x_rtrb": 1.0 },
                { "case": "broadcast single-producer overwriting", "x_rtrb": 1.9 },
                { "case": "rtrb", "x_rtrb": 1.0 },
            ]},
        })
    }

    fn met(report: &Value, target: &str) -> Value {
        evaluate(report)
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["target"] == target)
            .unwrap()["met"]
            .clone()
    }

    #[test]
    fn every_target_met_on_figures_inside_its_threshold() {
        let r = passing();
        for t in [
            "ring_vs_rtrb",
            "publish_vs_raw",
            "pingpong_x_floor",
            "wake_no_spin",
            "fanout_flat",
        ] {
            assert_eq!(met(&r, t), json!(true), "{t}");
        }
        assert_eq!(met(&r, "iox_plain_vs_upstream"), Value::Null);
    }

    #[test]
    fn each_target_fails_just_past_its_threshold() {
        let mut r = passing();
        r["rings"]["cases"][1]["x_rtrb"] = json!(0.99);
        assert_eq!(met(&r, "ring_vs_rtrb"), json!(false));

        let mut r = passing();
        r["throughput_interleaved"]["rows"]["shm"]["x_raw_median"] = json!(0.79);
        assert_eq!(met(&r, "publish_vs_raw"), json!(false), "0.8x");
        let mut r = passing();
        r["throughput_interleaved"]["rows"]["shm"]["frames_per_s_median"] = json!(9.9e6);
        assert_eq!(met(&r, "publish_vs_raw"), json!(false), "10 M/s");

        let mut r = passing();
        r["pingpong"][0]["one_way_p50_ns"] = json!(181.0);
        assert_eq!(met(&r, "pingpong_x_floor"), json!(false));
        let mut r = passing();
        r["floor_after"] = json!({ "one_way_p50_ns": 151.0 });
        assert_eq!(
            met(&r, "pingpong_x_floor"),
            Value::Null,
            "a floor that moved is not held against"
        );
        r["floor_after"] = json!({ "one_way_p50_ns": 149.0 });
        assert_eq!(met(&r, "pingpong_x_floor"), json!(true), "within 1.5x");

        let mut r = passing();
        r["wake"][1]["one_way_p50_ns"] = json!(12001.0);
        assert_eq!(met(&r, "wake_no_spin"), json!(false), "1.2x the futex");
        let mut r = passing();
        r["wake"][2]["one_way_p50_ns"] = json!(10999.0);
        assert_eq!(met(&r, "wake_no_spin"), json!(false), "iceoryx2's listener");

        let mut r = passing();
        r["wake"][0]["one_way_p50_ns"] = json!(186.0);
        r["wake"][1]["one_way_p50_ns"] = json!(150.0);
        assert_eq!(
            met(&r, "wake_no_spin"),
            Value::Null,
            "a futex pair that did not sleep at its p50 is no floor"
        );

        let mut r = passing();
        r["fanout"][2]["publish"]["p50_ns"] = json!(91.0);
        assert_eq!(met(&r, "fanout_flat"), json!(false));
    }

    /// Review findings: verdicts on figures that cannot be trusted.
    #[test]
    fn targets_on_untrustworthy_figures_are_not_judged() {
        // The vCPUs moved between the floor before the ratio suites and
        // the one after: neither ratio target is judged.
        let mut r = passing();
        r["ratio_placement"]["floor_after_ns"] = json!(31.0);
        assert_eq!(met(&r, "ring_vs_rtrb"), Value::Null);
        assert_eq!(met(&r, "publish_vs_raw"), Value::Null);
        let mut r = passing();
        r.as_object_mut().unwrap().remove("ratio_placement");
        assert_eq!(met(&r, "publish_vs_raw"), Value::Null, "no placement check");
        // One round of three with a rate is no median.
        let mut r = passing();
        r["throughput_interleaved"]["rows"]["shm"]["x_raw_counted"] = json!(1);
        assert_eq!(met(&r, "publish_vs_raw"), Value::Null);
        // A broadcast case without its ratio: the others are not judged alone.
        let mut r = passing();
        r["rings"]["cases"][1]["x_rtrb"] = Value::Null;
        assert_eq!(met(&r, "ring_vs_rtrb"), Value::Null);
        // zerocast's waits that did not sleep are no wake-up figure.
        let mut r = passing();
        r["wake"][1]["one_way_p50_ns"] = json!(400.0);
        assert_eq!(met(&r, "wake_no_spin"), Value::Null);
        // A p50 of 0 is not within any multiple of the floor.
        let mut r = passing();
        r["pingpong"][0]["one_way_p50_ns"] = json!(0.0);
        assert_eq!(met(&r, "pingpong_x_floor"), Value::Null);
        // The ratio stored in the row is not trusted: p50 / floor is judged.
        let mut r = passing();
        r["pingpong"][0]["p50_x_floor"] = json!(1.0);
        r["pingpong"][0]["one_way_p50_ns"] = json!(190.0);
        assert_eq!(met(&r, "pingpong_x_floor"), json!(false));
        // A fan-out case some of whose subscribers did not report.
        let mut r = passing();
        r["fanout"][2]["subscribers_reporting"] = json!(998);
        assert_eq!(met(&r, "fanout_flat"), Value::Null);
        // A broadcast case missing from the comparison.
        let mut r = passing();
        r["rings"]["cases"].as_array_mut().unwrap().remove(1);
        assert_eq!(met(&r, "ring_vs_rtrb"), Value::Null);
        // No second floor around the ping-pongs.
        let mut r = passing();
        r.as_object_mut().unwrap().remove("floor_after");
        assert_eq!(met(&r, "pingpong_x_floor"), Value::Null);
        // A failed shm fan-out case: flat over the others is not flat.
        let mut r = passing();
        r["fanout"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "case": "fanout shm 10", "error": "panicked" }));
        assert_eq!(met(&r, "fanout_flat"), Value::Null);
    }

    #[test]
    fn a_target_the_run_did_not_measure_is_never_met() {
        let empty = json!({});
        for c in evaluate(&empty).as_array().unwrap() {
            assert_eq!(c["met"], Value::Null, "{c}");
            assert!(c["missing"].as_str().is_some_and(|m| !m.is_empty()), "{c}");
        }
        // A fan-out that stopped before 1000 subscribers is not flat "to 1000".
        let mut r = passing();
        r["fanout"].as_array_mut().unwrap().pop();
        assert_eq!(met(&r, "fanout_flat"), Value::Null);
        let md = markdown(&evaluate(&empty));
        assert!(
            md.contains("| not measured |") && !md.contains("| yes |"),
            "{md}"
        );
    }
}
