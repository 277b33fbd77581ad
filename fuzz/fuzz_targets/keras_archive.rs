//! A Keras 3 `.keras` archive (a zip holding `model.weights.h5`). Caught panics of the
//! HDF5 reader: see keras_h5.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    let _ = readers::read_keras_archive(data);
});
