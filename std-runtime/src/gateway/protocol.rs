//! The `/ws` protocol: client requests and the gateway's control messages.
//!
//! Requests (one JSON object per text message):
//! `{"op":"auth","token":T}` (first message only, within 5 s),
//! `{"op":"subscribe","topics":[..],"instruments":[..],"from":SEQ,"bus":{TOPIC:ID}}`
//! (`instruments`, `from` and `bus` optional), `{"op":"unsubscribe","topics":[..]}`.
//!
//! A sequence counts in one bus segment: after a bus reset (the segment
//! made again, as after a reboot) sequences restart at 0. The `subscribed`
//! reply names each topic's segment (`"bus":{TOPIC:ID}`); a client that
//! resumes (`from`) passes back what it was told, and a subscription whose
//! segment is no longer that one is refused ([`reset_error`]) instead of
//! resuming at a sequence of another bus.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

/// Largest request accepted, in bytes.
pub const MAX_REQUEST: usize = 4096;
/// Most instrument filters one client may hold over all its topics.
pub const MAX_INSTRUMENTS: usize = 256;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Authenticate with a token.
    Auth(String),
    /// Subscribe to topics.
    Subscribe {
        /// Topic names.
        topics: Vec<String>,
        /// Only these instruments (None: all).
        instruments: Option<HashSet<String>>,
        /// Resume from this sequence.
        from: Option<u64>,
        /// The bus segment (per topic) the client's `from` counts in, as
        /// a `subscribed` reply named it.
        bus: Option<HashMap<String, String>>,
    },
    /// Unsubscribe from topics.
    Unsubscribe(Vec<String>),
}

/// An error message: `{"type":"error","op":OP,"error":TEXT}`.
pub fn error(op: &str, text: &str) -> String {
    json!({"type": "error", "op": op, "error": text}).to_string()
}

/// The refusal of a resume whose `from` counts in other bus segments than
/// these topics have now (a bus reset), naming each (topic, segment now):
/// `{"type":"error","op":"subscribe","error":TEXT,"reset":{TOPIC:ID,..}}`,
/// so that a client can tell it from other errors and start over. The
/// whole request is refused (its other topics too).
pub fn reset_error(reset: &[(&str, &str)]) -> String {
    let names: Vec<String> = reset.iter().map(|(t, _)| format!("\"{t}\"")).collect();
    let now: serde_json::Map<String, Value> = reset
        .iter()
        .map(|(t, id)| ((*t).to_owned(), json!(id)))
        .collect();
    json!({
        "type": "error",
        "op": "subscribe",
        "error": format!(
            "the bus was reset: \"from\" counts in another segment of {} than the bus has now (\"reset\" names the segments now), whose sequences restarted at 0; resuming would skip or mix them, so nothing of this request was subscribed. Subscribe to those topics again without \"from\" (live), or with \"from\":0 and the new \"bus\" to read the new bus from its start",
            names.join(", ")
        ),
        "reset": now,
    })
    .to_string()
}

fn strings(v: &Value, field: &str) -> Result<Option<Vec<String>>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("\"{field}\" must be a list of strings, found {x}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(x) => Err(format!("\"{field}\" must be a list of strings, found {x}")),
    }
}

/// Parses one request; the error names what was wrong (and the op, when
/// there is one, as the first element).
pub fn parse(text: &str) -> Result<Request, (String, String)> {
    if text.len() > MAX_REQUEST {
        return Err((
            String::new(),
            format!(
                "message of {} bytes exceeds the limit of {MAX_REQUEST} bytes",
                text.len()
            ),
        ));
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| (String::new(), format!("bad JSON: {e}")))?;
    let op = v
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            (
                String::new(),
                "a request needs \"op\": \"auth\", \"subscribe\" or \"unsubscribe\"".to_owned(),
            )
        })?
        .to_owned();
    let bad = |e: String| (op.clone(), e);
    match op.as_str() {
        "auth" => Ok(Request::Auth(
            v.get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("\"auth\" needs a \"token\" string".into()))?
                .to_owned(),
        )),
        "subscribe" | "unsubscribe" => {
            let topics = strings(&v, "topics")
                .map_err(bad)?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad(format!("\"{op}\" needs a non-empty \"topics\" list")))?;
            if op == "unsubscribe" {
                return Ok(Request::Unsubscribe(topics));
            }
            let instruments = strings(&v, "instruments")
                .map_err(bad)?
                .map(|i| i.into_iter().collect::<HashSet<_>>());
            let from = match v.get("from") {
                None | Some(Value::Null) => None,
                Some(x) => Some(x.as_u64().ok_or_else(|| {
                    bad(format!(
                        "\"from\" must be a sequence number (an integer >= 0), found {x}"
                    ))
                })?),
            };
            let bus = match v.get("bus") {
                None | Some(Value::Null) => None,
                Some(Value::Object(m)) => Some(
                    m.iter()
                        .map(|(t, id)| {
                            id.as_str().map(|id| (t.clone(), id.to_owned())).ok_or_else(|| {
                                bad(format!(
                                    "\"bus\" must map topics to the segment ids a \"subscribed\" reply named, found {id} for \"{t}\""
                                ))
                            })
                        })
                        .collect::<Result<HashMap<_, _>, _>>()?,
                ),
                Some(x) => {
                    return Err(bad(format!(
                        "\"bus\" must be an object of topic: segment id (as a \"subscribed\" reply named them), found {x}"
                    )))
                }
            };
            Ok(Request::Subscribe {
                topics,
                instruments,
                from,
                bus,
            })
        }
        other => Err(bad(format!(
            "unknown op \"{other}\" (expected \"auth\", \"subscribe\" or \"unsubscribe\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_their_errors() {
        assert_eq!(
            parse(r#"{"op":"subscribe","topics":["t"],"from":3}"#).unwrap(),
            Request::Subscribe {
                topics: vec!["t".into()],
                instruments: None,
                from: Some(3),
                bus: None,
            }
        );
        assert_eq!(
            parse(r#"{"op":"subscribe","topics":["t"],"from":3,"bus":{"t":"1-a"}}"#).unwrap(),
            Request::Subscribe {
                topics: vec!["t".into()],
                instruments: None,
                from: Some(3),
                bus: Some(HashMap::from([("t".into(), "1-a".into())])),
            }
        );
        assert!(parse(r#"{"op":"subscribe","topics":["t"],"bus":"1-a"}"#)
            .unwrap_err()
            .1
            .contains("\"bus\" must be an object"));
        assert!(parse(r#"{"op":"subscribe","topics":["t"],"bus":{"t":1}}"#)
            .unwrap_err()
            .1
            .contains("found 1 for \"t\""));
        assert!(parse("{").unwrap_err().1.contains("bad JSON"));
        assert!(parse(r#"{"op":"x"}"#)
            .unwrap_err()
            .1
            .contains("unknown op \"x\""));
        assert!(parse(r#"{"op":"subscribe"}"#)
            .unwrap_err()
            .1
            .contains("\"topics\""));
        assert!(parse(r#"{"op":"subscribe","topics":["t"],"from":-1}"#)
            .unwrap_err()
            .1
            .contains("\"from\""));
        assert!(parse(&" ".repeat(MAX_REQUEST + 1))
            .unwrap_err()
            .1
            .contains("exceeds"));
    }
}
