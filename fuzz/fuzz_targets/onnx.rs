//! An ONNX model: the protobuf reader, then the load-time analysis that every command runs
//! (order check, one traced run on a blank 16×16 image that checks every op's shapes, the
//! classifier and the cut points). The image is small so that an execution stays fast;
//! the graph's own fixed sizes still apply.
#![no_main]

use burn::prelude::*;
use libfuzzer_sys::fuzz_target;
use retrain::weights::Weights;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    let Ok(mut w) = Weights::from_bytes(data) else {
        return;
    };
    let Some(g) = w.graph.take() else {
        return;
    };
    let device = Device::default();
    let _ = retrain::graph::analyse(&g, &w, Some(16), &device);
});
