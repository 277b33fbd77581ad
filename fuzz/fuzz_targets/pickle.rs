//! The restricted unpickler alone (torch.save's data.pkl and legacy streams).
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    let _ = readers::pickle(data);
});
