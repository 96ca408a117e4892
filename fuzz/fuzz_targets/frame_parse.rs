//! Frame validation on arbitrary bytes: a frame read from a file or a foreign
//! segment is untrusted; validation must reject garbage without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerocast_core::frame::{FrameBuf, FrameRef, MAX_FRAME_WORDS};

fuzz_target!(|data: &[u8]| {
    // rkyv views need 8-byte alignment: validate from an aligned copy, the
    // way the bus and the WAL reader hand frames over.
    let mut buf = FrameBuf::default();
    let n = data.len().min(MAX_FRAME_WORDS * 8);
    zerocast_core::frame::words_as_bytes_mut(&mut buf.0)[..n].copy_from_slice(&data[..n]);
    let bytes = &buf.bytes()[..n];
    if let Ok((_, frame)) = FrameRef::parse(bytes) {
        // A frame that validates can be looked at field by field.
        let _ = format!("{frame:?}");
    }
});
