//! A safetensors file: header length, JSON header, tensor data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    let _ = readers::safetensors(data);
});
