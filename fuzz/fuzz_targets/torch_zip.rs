//! A torch.save zip archive (PyTorch 1.6+): zip, data.pkl, storages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    let _ = readers::read_zip(data);
});
