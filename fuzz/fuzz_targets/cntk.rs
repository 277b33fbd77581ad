//! A CNTK model, v2 (protobuf Dictionary) or v1 (binary network): the reader and the
//! translation to the graph, then the load-time analysis every command runs (see
//! `retrain_fuzz::load_and_analyse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    retrain_fuzz::load_and_analyse(data);
});
