//! A Keras 3 `.keras` archive (a zip holding `model.weights.h5`), read as it is and
//! repacked with valid checksums (see torch_zip.rs). Caught panics of the HDF5 reader: see
//! keras_h5.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    let _ = readers::read_keras_archive(data);
    if let Some(repacked) = retrain_fuzz::repack_zip(data) {
        let _ = readers::read_keras_archive(&repacked);
    }
});
