//! Shared by the fuzz targets.

use std::sync::Once;

/// Lets a panic that the code under test catches (`catch_unwind`) pass, as it does in the
/// program: libFuzzer's panic hook aborts on every panic, caught or not. A panic that
/// escapes the code under test still aborts (libfuzzer-sys checks the target's result), but
/// without its message: rerun the crash input with `FUZZ_CAUGHT_PANICS=abort` to see it.
/// With `FUZZ_CAUGHT_PANICS=abort` set, libFuzzer's hook stays and any panic is a crash.
pub fn tolerate_caught_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("FUZZ_CAUGHT_PANICS").is_none_or(|v| v != "abort") {
            std::panic::set_hook(Box::new(|_| {}));
        }
    });
}

/// A model file read as every command reads it, then, when it holds a graph (ONNX, TFLite,
/// a Keras full model), the load-time analysis every command runs: order check, one traced
/// run on a blank 16×16 image (small so that an execution stays fast; a graph's own fixed
/// size still applies) that checks every op's shapes, the classifier and the cut points.
pub fn load_and_analyse(data: &[u8]) {
    use burn::prelude::Device;
    let Ok(mut w) = retrain::weights::Weights::from_bytes(data) else {
        return;
    };
    let Some(g) = w.graph.take() else {
        return;
    };
    let _ = retrain::graph::analyse(&g, &w, Some(16), &Device::default());
}

/// The same archive written anew, every entry stored uncompressed with a correct CRC-32.
/// A mutation inside a zip entry almost always breaks the entry's checksum, so the reader
/// behind the zip would never see it; fuzzing the repacked archive lets content mutations
/// through. `None` when the input is not a readable zip. Each entry is read up to 64 MiB
/// (a deflate bomb is the zip reader's own concern, fuzzed on the raw input).
pub fn repack_zip(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Cursor, Read, Write};
    let mut archive = zip::ZipArchive::new(Cursor::new(data)).ok()?;
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len().min(4096) {
        let Ok(f) = archive.by_index(i) else {
            continue;
        };
        let Ok(name) = f.name().map(|n| n.into_owned()) else {
            continue;
        };
        let mut content = Vec::new();
        // A bad checksum is reported after the last byte: the content is all read by then.
        let _ = f.take(64 << 20).read_to_end(&mut content);
        out.start_file(name, stored).ok()?;
        out.write_all(&content).ok()?;
    }
    Some(out.finish().ok()?.into_inner())
}
