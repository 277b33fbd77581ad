//! A TensorFlow Lite flatbuffer: verified, then weights dequantised and BatchNorm-folded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    let _ = readers::tflite(data);
});
