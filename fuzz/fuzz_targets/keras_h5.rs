//! Keras HDF5 files (Keras 2 `.h5` weights and full models, Keras 3 `.weights.h5`): the
//! weights reader, then, for a full model, its architecture translated into retrain's graph
//! and the load-time analysis every command runs (see `retrain_fuzz::load_and_analyse`).
//!
//! `keras_h5` parses through `hdf5-reader` inside `catch_unwind` (a panic in it is reported
//! as a corrupt file). libFuzzer's panic hook would abort on such a caught panic too; set
//! `FUZZ_CAUGHT_PANICS=abort` to keep that and find them, otherwise they are tolerated as
//! in the program, and only a panic that escapes the reader is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retrain_fuzz::tolerate_caught_panics();
    retrain_fuzz::load_and_analyse(data);
});
