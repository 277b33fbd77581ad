//! TFLite metadata: the buffer a model names `TFLITE_METADATA`, a second flatbuffer
//! (`ModelMetadata`, tflite-support's `metadata_schema.fbs`, identifier `M001`) that
//! tflite-support's MetadataPopulator writes. retrain reads one thing from it: the image
//! input's `NormalizationOptions`, the scaling the model's pixels take. The metadata is
//! advice: when it does not verify or says something else, it is not read.

use flatbuffers::{
    Follow, ForwardsUOffset, InvalidFlatbuffer, Table, Vector, Verifiable, Verifier,
    VerifierOptions,
};

use super::{List, Tables};
use crate::graph::InputScaling;

/// The name of the model's `metadata` entry whose buffer holds the metadata.
pub(super) const NAME: &str = "TFLITE_METADATA";

/// `NormalizationOptions`' key in the `ProcessUnitOptions` union.
const NORMALIZATION: u8 = 1;

// Field slots from metadata_schema.fbs.
table!(ModelMetadata {
    subgraph_metadata: Tables<'a, SubGraphMetadata<'a>> = 3,
});
table!(SubGraphMetadata {
    input_tensor_metadata: Tables<'a, TensorMetadata<'a>> = 2,
});
table!(TensorMetadata {
    process_units: Tables<'a, ProcessUnit<'a>> = 4,
});
// The `options` union: its key at slot 0, its table at slot 1. The table is verified as
// NormalizationOptions whatever the key (the only kind read, and only under its key): an
// input's unit of another kind (a text model's tokenizer) may then not verify, and the
// metadata is not read, which costs nothing for an image model.
table!(ProcessUnit {
    options_type: u8 = 0,
    options: ForwardsUOffset<NormalizationOptions<'a>> = 1,
});
table!(NormalizationOptions {
    mean: List<'a, f32> = 0,
    std: List<'a, f32> = 1,
});

/// The first input's normalisation, `(x − mean) / std` per channel on 0..255 pixels, as
/// the 0..1 pixel scaling retrain holds; `None` when the bytes are not verified metadata or
/// hold no usable normalisation (one value or three, finite, positive deviations).
pub(super) fn input_normalisation(bytes: &[u8]) -> Option<InputScaling> {
    if bytes.get(4..8) != Some(b"M001") {
        return None;
    }
    // Bounded by the buffer, itself inside the verified model.
    let opts = VerifierOptions {
        max_depth: 16,
        max_tables: 1 << 16,
        ..Default::default()
    };
    let meta = flatbuffers::root_with_opts::<ModelMetadata>(&opts, bytes).ok()?;
    let input = meta
        .subgraph_metadata()?
        .iter()
        .next()?
        .input_tensor_metadata()?
        .iter()
        .next()?;
    let norm = input
        .process_units()?
        .iter()
        .find(|u| u.options_type() == Some(NORMALIZATION))?
        .options()?;
    let channels = |v: Option<Vector<'_, f32>>| -> Option<[f64; 3]> {
        let v: Vec<f64> = v?.iter().take(4).map(f64::from).collect();
        match *v.as_slice() {
            [x] => Some([x; 3]),
            [r, g, b] => Some([r, g, b]),
            _ => None,
        }
    };
    let (mean, std) = (channels(norm.mean())?, channels(norm.std())?);
    let usable =
        mean.iter().all(|m| m.is_finite()) && std.iter().all(|s| s.is_finite() && *s > 0.0);
    usable.then(|| InputScaling {
        mean: mean.map(|m| m / 255.0),
        std: std.map(|s| s / 255.0),
        bgr: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        std::fs::read(dir.join("tflite_ops/metadata.tflite")).unwrap()
    }

    /// The metadata buffer of the fixture and where it lies in the file.
    fn metadata_buffer(model: &[u8]) -> (usize, usize) {
        let m = flatbuffers::root::<super::super::Model>(model).unwrap();
        let entry = m
            .metadata()
            .unwrap()
            .iter()
            .find(|e| e.name() == Some(NAME))
            .unwrap();
        let data = m
            .buffers()
            .unwrap()
            .get(entry.buffer().unwrap() as usize)
            .data()
            .unwrap()
            .bytes();
        let at = data.as_ptr() as usize - model.as_ptr() as usize;
        (at, data.len())
    }

    #[test]
    fn the_fixtures_normalisation_is_read() {
        let model = fixture();
        let (at, len) = metadata_buffer(&model);
        let s = input_normalisation(&model[at..at + len]).expect("a normalisation");
        let (mean, std) = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]);
        for c in 0..3 {
            assert!((s.mean[c] - mean[c] / 255.0).abs() < 1e-6);
            assert!((s.std[c] - std[c] / 255.0).abs() < 1e-6);
        }
    }

    /// A hostile metadata buffer: every truncation, flipped bytes, garbage behind the
    /// identifier. Never a panic; what does not verify is not read.
    #[test]
    fn damaged_metadata_is_not_read_and_never_panics() {
        let model = fixture();
        let (at, len) = metadata_buffer(&model);
        let good = model[at..at + len].to_vec();
        for n in 0..len {
            assert_eq!(input_normalisation(&good[..n]), None, "cut to {n} of {len}");
        }
        let mut rand = {
            let mut s = 0x9E37_79B9_7F4A_7C15u64;
            move || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            }
        };
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..1 + rand() % 4 {
                let i = (rand() as usize) % len;
                b[i] = rand() as u8;
            }
            let _ = input_normalisation(&b);
        }
        let mut garbage: Vec<u8> = (0..4096).map(|_| rand() as u8).collect();
        garbage[4..8].copy_from_slice(b"M001");
        assert_eq!(input_normalisation(&garbage), None);

        // Inside the model: the metadata vector's length cut (the model stays valid) or its
        // bytes overwritten. The model reads, without the metadata's scaling.
        for cut in [0, 7, len / 2, len - 1] {
            let mut m = model.clone();
            m[at - 4..at].copy_from_slice(&(cut as u32).to_le_bytes());
            let w = crate::weights::Weights::from_bytes(&m).unwrap();
            assert_eq!(w.graph.unwrap().input_scaling, None, "cut to {cut}");
        }
        let mut m = model.clone();
        for b in &mut m[at + 8..at + len] {
            *b = rand() as u8;
        }
        let w = crate::weights::Weights::from_bytes(&m).unwrap();
        assert_eq!(w.graph.unwrap().input_scaling, None);
    }
}
