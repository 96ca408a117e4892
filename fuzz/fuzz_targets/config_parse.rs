//! The config parser on arbitrary text: an error naming what is wrong, never
//! a panic, and every accepted topic has a ring shape or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerocast_ipc::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            for topic in &config.topics {
                let _ = topic.ring_shape();
                let _ = config.segment_path(&topic.name);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
