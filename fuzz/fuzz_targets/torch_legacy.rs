//! A legacy torch.save stream (PyTorch < 1.6): five pickles, then raw storages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    let _ = readers::read_legacy(data);
});
