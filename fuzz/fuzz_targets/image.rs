//! retrain's image path: decoding (format from the content, header size limit, EXIF
//! orientation, any colour model to RGB), then resize + center crop + normalisation; and
//! the `--jpeg-draft` decode (a JPEG at a reduced DCT scale).
#![no_main]

use libfuzzer_sys::fuzz_target;
use retrain::data::{self, Limits};
use retrain::zoo::{Interpolation, Preprocess};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_pixels: 4_000_000,
        jpeg_draft: false,
    };
    if let Ok(img) = data::decode_rgb_with(data, &limits) {
        let p = Preprocess::imagenet(224, 224, Interpolation::Bilinear);
        let mut out = vec![0f32; 3 * 224 * 224];
        let _ = data::preprocess_into(&img, &p, &mut out);
    }
    let draft = Limits {
        jpeg_draft: true,
        ..limits
    };
    let _ = data::decode_rgb_for(data, &draft, Some(16));
});
