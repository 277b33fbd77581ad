//! A TensorFlow tensor bundle's `.index` table (the fuzzer's bytes), with a fixed data
//! shard: the committed checkpoint fixture's, as shards 0 and 1 (the seeds have one or two),
//! and empty shards past those (a header may announce up to 4096). In a
//! fuzzing build (`cfg(fuzzing)`) the block and tensor checksums are not enforced, so the
//! mutations reach the table, protobuf and tensor parsing behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::weights::readers::{self, BundleFiles};

static SHARD: &[u8] =
    include_bytes!("../../tests/fixtures/tf_keras2_resnet/checkpoint/weights.data-00000-of-00001");

fuzz_target!(|data: &[u8]| {
    if let Ok(files) = BundleFiles::from_index(data.to_vec(), |i, _| {
        Ok(if i < 2 { SHARD.to_vec() } else { Vec::new() })
    }) {
        let _ = readers::tf_bundle(&files);
    }
});
