//! Keras HDF5 weights (Keras 2 `.h5`, Keras 3 `.weights.h5`).
//!
//! `keras_h5` parses through `hdf5-reader` inside `catch_unwind` (a panic in it is reported
//! as a corrupt file). libFuzzer's panic hook would abort on such a caught panic too; set
//! `FUZZ_CAUGHT_PANICS=abort` to keep that and find them, otherwise they are tolerated as
//! in the program, and only a panic that escapes the reader is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    let _ = readers::keras_h5(data);
});
