//! The `/ws` protocol: client requests and the gateway's control messages.
//!
//! Requests (one JSON object per text message):
//! `{"op":"auth","token":T}` (first message only, within 5 s),
//! `{"op":"subscribe","topics":[..],"instruments":[..],"from":SEQ}`
//! (`instruments` and `from` optional), `{"op":"unsubscribe","topics":[..]}`.

use std::collections::HashSet;

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
    },
    /// Unsubscribe from topics.
    Unsubscribe(Vec<String>),
}

/// An error message: `{"type":"error","op":OP,"error":TEXT}`.
pub fn error(op: &str, text: &str) -> String {
    json!({"type": "error", "op": op, "error": text}).to_string()
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
            Ok(Request::Subscribe {
                topics,
                instruments,
                from,
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
                from: Some(3)
            }
        );
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
