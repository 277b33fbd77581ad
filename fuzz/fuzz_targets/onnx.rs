//! An ONNX model: the protobuf reader, then the load-time analysis that every command runs
//! (see `retrain_fuzz::load_and_analyse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    retrain_fuzz::load_and_analyse(data);
});
