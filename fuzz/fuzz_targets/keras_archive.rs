//! A Keras 3 `.keras` archive (a zip holding `config.json` and `model.weights.h5`), read as
//! it is and repacked with valid checksums (see torch_zip.rs), each through the weights
//! reader, the architecture's translation into retrain's graph and the load-time analysis
//! (see `retrain_fuzz::load_and_analyse`). Caught panics of the HDF5 reader: see
//! keras_h5.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    retrain_fuzz::load_and_analyse(data);
    if let Some(repacked) = retrain_fuzz::repack_zip(data) {
        retrain_fuzz::load_and_analyse(&repacked);
    }
});
