//! A torch.save zip archive (PyTorch 1.6+): zip, data.pkl, storages. Each input is read as
//! it is, then repacked with valid checksums so that mutations of data.pkl and of the
//! storages reach the unpickler and the tensor views (see `retrain_fuzz::repack_zip`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    let _ = readers::read_zip(data);
    if let Some(repacked) = retrain_fuzz::repack_zip(data) {
        let _ = readers::read_zip(&repacked);
    }
});
