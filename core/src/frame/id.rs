//! Fixed-width ids built from strings.
//!
//! Ids are NUL-padded UTF-8 in fixed arrays. Building one from a string that
//! does not fit is an error, never a silent truncation.

/// Why a string cannot become an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// The string is longer than the id field.
    TooLong {
        /// Length of the string in bytes.
        len: usize,
        /// Capacity of the id field in bytes.
        max: usize,
    },
    /// The string contains a NUL byte, which would end the id early.
    ContainsNul,
}

impl core::fmt::Display for IdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooLong { len, max } => {
                write!(f, "id of {len} bytes does not fit a {max}-byte field")
            }
            Self::ContainsNul => f.write_str("id contains a NUL byte"),
        }
    }
}

impl core::error::Error for IdError {}

/// Builds a NUL-padded id of `N` bytes from `s`.
///
/// ```
/// use zerocast_core::frame::id::{id, IdError};
/// let inst: [u8; 16] = id("BTC-USDT").unwrap();
/// assert_eq!(&inst[..8], b"BTC-USDT");
/// assert_eq!(id::<4>("too long"), Err(IdError::TooLong { len: 8, max: 4 }));
/// ```
pub fn id<const N: usize>(s: &str) -> Result<[u8; N], IdError> {
    let bytes = s.as_bytes();
    if bytes.len() > N {
        return Err(IdError::TooLong {
            len: bytes.len(),
            max: N,
        });
    }
    if bytes.contains(&0) {
        return Err(IdError::ContainsNul);
    }
    let mut out = [0u8; N];
    out[..bytes.len()].copy_from_slice(bytes);
    Ok(out)
}

/// Reads an id back as a string: the bytes before the first NUL.
///
/// Returns `Err` with the valid prefix length if the bytes are not UTF-8.
pub fn id_str(bytes: &[u8]) -> Result<&str, core::str::Utf8Error> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_exact_fit() {
        let full: [u8; 4] = id("abcd").unwrap();
        assert_eq!(id_str(&full), Ok("abcd"));
        let short: [u8; 8] = id("ab").unwrap();
        assert_eq!(id_str(&short), Ok("ab"));
        let empty: [u8; 8] = id("").unwrap();
        assert_eq!(id_str(&empty), Ok(""));
    }

    #[test]
    fn too_long_and_nul_are_errors() {
        assert_eq!(id::<3>("abcd"), Err(IdError::TooLong { len: 4, max: 3 }));
        assert_eq!(id::<8>("a\0b"), Err(IdError::ContainsNul));
        // Multi-byte UTF-8 counts bytes, not chars.
        assert_eq!(id::<3>("é€"), Err(IdError::TooLong { len: 5, max: 3 }));
    }

    #[test]
    fn invalid_utf8_is_reported() {
        assert!(id_str(&[0xff, 0xfe, 0]).is_err());
    }
}
