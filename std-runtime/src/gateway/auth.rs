//! Client tokens: `HEX(claims JSON) "." HEX(HMAC-SHA256(secret, claims JSON))`.
//!
//! The claims are `{"accounts":["user-00001",...],"exp":UNIX_SECONDS}`. A
//! token is accepted only in a client's first WebSocket message (never in a
//! URL, where it would end up in logs and browser history).

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Environment variable holding the gateway's token secret.
pub const SECRET_ENV: &str = "ZEROCAST_GATEWAY_SECRET";

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// A token for `accounts`, valid until `exp` (seconds since the Unix epoch).
pub fn sign(secret: &[u8], accounts: &[&str], exp: u64) -> String {
    let claims = json!({ "accounts": accounts, "exp": exp }).to_string();
    let mut m = mac(secret);
    m.update(claims.as_bytes());
    format!(
        "{}.{}",
        hex(claims.as_bytes()),
        hex(&m.finalize().into_bytes())
    )
}

/// The account ids of a valid token at time `now` (seconds since the Unix
/// epoch), or why it is refused.
pub fn verify(secret: &[u8], token: &str, now: u64) -> Result<Vec<String>, String> {
    verify_with_expiry(secret, token, now).map(|(accounts, _)| accounts)
}

/// [`verify`], with the token's expiry (seconds since the Unix epoch): a
/// connection must not outlive it.
pub fn verify_with_expiry(
    secret: &[u8],
    token: &str,
    now: u64,
) -> Result<(Vec<String>, u64), String> {
    let (claims_hex, sig_hex) = token
        .split_once('.')
        .ok_or("token is not CLAIMS.SIGNATURE")?;
    let claims = unhex(claims_hex).ok_or("token claims are not hex")?;
    let sig = unhex(sig_hex).ok_or("token signature is not hex")?;
    let mut m = mac(secret);
    m.update(&claims);
    m.verify_slice(&sig)
        .map_err(|_| "token signature does not match")?;
    let claims: Value =
        serde_json::from_slice(&claims).map_err(|e| format!("token claims: {e}"))?;
    let exp = claims["exp"]
        .as_u64()
        .ok_or("token claims have no \"exp\"")?;
    if exp <= now {
        return Err(format!("token expired at {exp} (now {now})"));
    }
    let accounts = claims["accounts"]
        .as_array()
        .ok_or("token claims have no \"accounts\" list")?;
    let accounts = accounts
        .iter()
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .ok_or_else(|| "token claims: an account id is not a string".to_owned())
        })
        .collect::<Result<_, _>>()?;
    Ok((accounts, exp))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_refusals() {
        let t = sign(b"k", &["user-1", "user-2"], 100);
        assert_eq!(verify(b"k", &t, 99).unwrap(), ["user-1", "user-2"]);
        assert!(verify(b"k", &t, 100).unwrap_err().contains("expired"));
        assert!(verify(b"other", &t, 99)
            .unwrap_err()
            .contains("signature does not match"));
        let (c, s) = t.split_once('.').unwrap();
        let forged = format!(
            "{}.{s}",
            hex(&unhex(c).unwrap().iter().map(|b| b ^ 1).collect::<Vec<_>>())
        );
        assert!(verify(b"k", &forged, 99).is_err());
        assert!(verify(b"k", "nodot", 0)
            .unwrap_err()
            .contains("CLAIMS.SIGNATURE"));
        assert!(verify(b"k", "zz.zz", 0).unwrap_err().contains("not hex"));
    }
}
