//! Format detection from the content, then the reader it picks (`Weights::from_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::Weights;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = Weights::from_bytes(data) {
        let _ = w.parameter_count();
    }
});
