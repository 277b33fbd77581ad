//! Data: finding images, decoding them (any common format, EXIF orientation applied, every
//! colour model to RGB) and turning them into the normalised tensors a model expects.

use std::path::{Path, PathBuf};

use std::io::Cursor;

use anyhow::{Context, Result, anyhow, bail};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::zoo::{Interpolation, Preprocess};

/// File extensions picked up when walking a folder.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif"];

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// How large an image may be. Checked from the file's header before any pixel is decoded,
/// so a small file claiming an enormous size (a decompression bomb) costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pixels (width × height) an image may have; larger ones are refused. The default,
    /// 89,478,485, is PIL's `MAX_IMAGE_PIXELS`.
    pub max_pixels: u64,
    /// Decode a JPEG at the smallest DCT scale (1/2, 1/4 or 1/8) that still leaves its
    /// shorter side at least the resize size, as PIL's `Image.draft` does. The entropy
    /// decoding is the same; the inverse DCT, colour conversion and resize work on the
    /// smaller image (embedding 12-megapixel photos: 1.7 times faster, a third of the
    /// memory). Pixels differ a little from a full decode's, which is what torchvision's
    /// pipeline sees, hence off by default. Only for inference preprocessing, not
    /// augmentation.
    pub jpeg_draft: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: Self::DEFAULT_MAX_PIXELS,
            jpeg_draft: false,
        }
    }
}

impl Limits {
    /// PIL's `Image.MAX_IMAGE_PIXELS`.
    pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

    /// Bytes per pixel the decoder may hold at most (16-bit RGBA).
    const DECODED_BYTES_PER_PIXEL: u64 = 8;

    pub fn validate(&self) -> Result<(), crate::strategy::InvalidOption> {
        if self.max_pixels >= 1 {
            Ok(())
        } else {
            Err(crate::strategy::InvalidOption {
                name: "max_pixels",
                rule: "at least 1",
                value: self.max_pixels.to_string(),
            })
        }
    }

    /// The `image` crate's allocation limits that go with this pixel limit: the decoded
    /// buffer of the largest allowed image in the widest pixel format, plus room for the
    /// decoder's own tables.
    pub fn decoder_limits(&self) -> image::Limits {
        let mut l = image::Limits::default();
        l.max_alloc = Some(
            self.max_pixels
                .saturating_mul(Self::DECODED_BYTES_PER_PIXEL)
                .saturating_add(64 << 20),
        );
        l
    }

    /// Refuses a `w`×`h` image over the limit, naming its claimed size.
    pub fn check(&self, w: u32, h: u32) -> Result<()> {
        let pixels = w as u64 * h as u64;
        if pixels > self.max_pixels {
            bail!(
                "image claims {w}x{h} pixels ({pixels}), over the limit of {} pixels (raise --max-pixels to read it)",
                self.max_pixels
            );
        }
        Ok(())
    }
}

/// What walking the inputs found: the image files, in order, and what was left out with
/// the reason (a folder that cannot be listed, a symbolic-link loop), for the caller to
/// report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    pub paths: Vec<PathBuf>,
    pub notes: Vec<(PathBuf, String)>,
}

/// Expands the command line's files and folders into image files, in a stable order:
/// files as given, folders walked recursively with entries sorted by name. What
/// [`scan_images`] would report is dropped; use it to show the warnings.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    Ok(scan_images(inputs, false)?.paths)
}

/// Names never taken as images or walked: hidden files and folders (a leading `.`, such as
/// `.DS_Store` or `._photo.jpg`), Windows' `Thumbs.db` and `desktop.ini`, and the
/// `__MACOSX` folder of zip archives made on a Mac.
pub fn is_ignored_name(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with('.')
        || n.eq_ignore_ascii_case("thumbs.db")
        || n.eq_ignore_ascii_case("desktop.ini")
        || n == "__MACOSX"
}

/// Like [`collect_images`], with what was left out. Symbolic links are followed; a link back
/// to a folder being walked (a loop) or to one already walked is skipped and noted once.
/// A sub-folder that cannot be listed is noted and skipped, or is an error when `strict`.
/// Hidden and system files ([`is_ignored_name`]) are ignored without a note.
pub fn scan_images(inputs: &[PathBuf], strict: bool) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut walker = Walker::new(strict);
    for input in inputs {
        let meta = std::fs::metadata(input)
            .with_context(|| format!("cannot read {}: no such file or folder", input.display()))?;
        if meta.is_dir() {
            walker.walk_input(input, &meta, &mut scan)?;
        } else {
            scan.paths.push(input.clone());
        }
    }
    Ok(scan)
}

/// Walks sub-folders of one `root` (a data set's class folders) as [`scan_images`] does
/// and as one tree: a link back to `root` is a loop, and a folder reached from two of them
/// is listed under the first only.
pub struct SubFolders(Walker);

impl SubFolders {
    // The key is `Copy` on Unix only.
    #[cfg_attr(unix, allow(clippy::clone_on_copy))]
    pub fn new(root: &Path, strict: bool) -> Result<Self> {
        let mut walker = Walker::new(strict);
        let meta = std::fs::metadata(root)
            .with_context(|| format!("cannot read {}: no such file or folder", root.display()))?;
        let key = dir_key(root, &meta);
        walker.visited.insert(key.clone(), root.to_owned());
        walker.ancestors.push(key);
        Ok(Self(walker))
    }

    /// The images of `dir`, which must hold some.
    pub fn scan(&mut self, dir: &Path) -> Result<Scan> {
        let meta =
            std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        let mut scan = Scan::default();
        self.0.walk_input(dir, &meta, &mut scan)?;
        Ok(scan)
    }
}

/// A folder's identity: (device, inode) on Unix, the resolved path elsewhere.
#[cfg(unix)]
type DirKey = (u64, u64);
#[cfg(not(unix))]
type DirKey = PathBuf;

#[cfg(unix)]
fn dir_key(_path: &Path, meta: &std::fs::Metadata) -> DirKey {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dir_key(path: &Path, _meta: &std::fs::Metadata) -> DirKey {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list folder {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

/// A recursive folder walk that remembers the folders it has been through.
struct Walker {
    /// Every folder walked, by identity, with the path it was first reached by.
    visited: std::collections::HashMap<DirKey, PathBuf>,
    /// The folders being walked, outermost first.
    ancestors: Vec<DirKey>,
    strict: bool,
}

impl Walker {
    fn new(strict: bool) -> Self {
        Self {
            visited: std::collections::HashMap::new(),
            ancestors: Vec::new(),
            strict,
        }
    }

    /// Walks a folder named by the caller, which must hold images.
    fn walk_input(&mut self, dir: &Path, meta: &std::fs::Metadata, scan: &mut Scan) -> Result<()> {
        let before = scan.paths.len();
        let entries = list_dir(dir)?;
        self.walk(dir, meta, entries, scan)?;
        if scan.paths.len() == before {
            bail!(
                "no images in folder {} (looked for {} files)",
                dir.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        Ok(())
    }

    #[cfg_attr(unix, allow(clippy::clone_on_copy))]
    fn walk(
        &mut self,
        dir: &Path,
        meta: &std::fs::Metadata,
        entries: Vec<PathBuf>,
        scan: &mut Scan,
    ) -> Result<()> {
        let key = dir_key(dir, meta);
        if self.ancestors.contains(&key) {
            let target = &self.visited[&key];
            scan.notes.push((
                dir.to_owned(),
                format!(
                    "a symbolic-link loop (leads back to {}); not followed",
                    target.display()
                ),
            ));
            return Ok(());
        }
        if let Some(first) = self.visited.get(&key) {
            scan.notes.push((
                dir.to_owned(),
                format!(
                    "the same folder as {}, already walked; not walked again",
                    first.display()
                ),
            ));
            return Ok(());
        }
        self.visited.insert(key.clone(), dir.to_owned());
        self.ancestors.push(key);
        for p in entries {
            if p.file_name().is_some_and(is_ignored_name) {
                continue;
            }
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => match list_dir(&p) {
                    Ok(sub) => self.walk(&p, &m, sub, scan)?,
                    Err(e) if self.strict => {
                        return Err(
                            e.context("fix its permissions or run without --strict to skip it")
                        );
                    }
                    Err(e) => {
                        let why = format!("{:#}", e.root_cause());
                        scan.notes
                            .push((p, format!("cannot list folder ({why}); skipped")));
                    }
                },
                // A file, or a broken link: an image name is kept, and reported if it
                // cannot be read.
                _ if has_image_extension(&p) => scan.paths.push(p),
                _ => {}
            }
        }
        self.ancestors.pop();
        Ok(())
    }
}

/// Decodes an image file, detecting the format from its content, applying its EXIF
/// orientation and converting grayscale, palette, CMYK or alpha images to 8-bit RGB.
/// Errors say what is wrong with the file; the caller names it.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    load_rgb_with(path, &Limits::default())
}

/// Like [`load_rgb`], refusing an image over `limits` from its header, before decoding it.
pub fn load_rgb_with(path: &Path, limits: &Limits) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read file ({e})"))?;
    decode_rgb_with(&bytes, limits)
}

/// [`load_rgb_with`] on the bytes of an image file already in memory.
pub fn decode_rgb_with(bytes: &[u8], limits: &Limits) -> Result<RgbImage> {
    decode_rgb_for(bytes, limits, None)
}

/// [`decode_rgb_with`] for an image that will be resized to a shorter side of `resize`:
/// with [`Limits::jpeg_draft`] a JPEG is then decoded at a reduced DCT scale.
pub fn decode_rgb_for(bytes: &[u8], limits: &Limits, resize: Option<usize>) -> Result<RgbImage> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| anyhow!("cannot read file ({e})"))
    };
    // The header alone first: its claimed size is checked before any pixel buffer exists.
    let mut probe = reader()?;
    probe.no_limits();
    let (w, h) = probe
        .into_dimensions()
        .map_err(|e| anyhow!("not a readable image ({e})"))?;
    limits.check(w, h)?;
    let mut reader = reader()?;
    reader.limits(limits.decoder_limits());
    let format = reader.format();
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| anyhow!("not a readable image ({e})"))?;
    let orientation = decoder.orientation().ok();
    let draft = match (limits.jpeg_draft, resize, format) {
        (true, Some(size), Some(ImageFormat::Jpeg)) => jpeg_draft(bytes, size, limits)?,
        _ => None,
    };
    let mut img = match draft {
        Some(img) => DynamicImage::ImageRgb8(img),
        None => DynamicImage::from_decoder(decoder).map_err(|e| anyhow!("corrupt image ({e})"))?,
    };
    // The JPEG decoder fills a cut-off scan with grey instead of failing; a file whose
    // entropy-coded data never reaches the end-of-image marker is truncated.
    if format == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        bail!("truncated JPEG (no end-of-image marker after the image data)");
    }
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.into_rgb8())
}

/// A JPEG decoded at the smallest DCT scale that keeps its shorter side at least `size`
/// (the IDCT of each 8×8 block computed at 4×4, 2×2 or 1×1); `None` when no reduction
/// applies or the colour model is one the full decoder handles better (CMYK, 16 bits).
fn jpeg_draft(bytes: &[u8], size: usize, limits: &Limits) -> Result<Option<RgbImage>> {
    let mut d = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    d.read_info()
        .map_err(|e| anyhow!("not a readable image ({e})"))?;
    let Some(info) = d.info() else {
        return Ok(None);
    };
    let (w, h) = (info.width as usize, info.height as usize);
    let short = w.min(h);
    let Some(k) = [8, 4, 2].into_iter().find(|k| short.div_ceil(*k) >= size) else {
        return Ok(None);
    };
    if !matches!(
        info.pixel_format,
        jpeg_decoder::PixelFormat::RGB24 | jpeg_decoder::PixelFormat::L8
    ) {
        return Ok(None);
    }
    let (sw, sh) = d
        .scale(w.div_ceil(k) as u16, h.div_ceil(k) as u16)
        .map_err(|e| anyhow!("corrupt image ({e})"))?;
    let (sw, sh) = (sw as u32, sh as u32);
    if (sw.min(sh) as usize) < size {
        return Ok(None);
    }
    // The coefficients of a progressive JPEG are kept whole: bound the decoder by the
    // full image, as the `image` decoder is.
    d.set_max_decoding_buffer_size(
        limits
            .decoder_limits()
            .max_alloc
            .unwrap_or(u64::MAX)
            .min(usize::MAX as u64) as usize,
    );
    let pixels = d.decode().map_err(|e| anyhow!("corrupt image ({e})"))?;
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => pixels,
    };
    RgbImage::from_raw(sw, sh, rgb)
        .map(Some)
        .ok_or_else(|| anyhow!("corrupt image (the JPEG decoder gave too few pixels)"))
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan (FF DA). Markers
/// cannot occur inside scan data (0xFF is byte-stuffed), and thumbnails in EXIF end before
/// the main image's scans.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// torchvision's `Resize(size)` on the shorter side: the longer side is `size * long / short`,
/// truncated.
fn resized_dims(w: u32, h: u32, size: usize) -> (u32, u32) {
    let size = size as u64;
    let (w64, h64) = (w as u64, h as u64);
    if w <= h {
        (size as u32, (size * h64 / w64).max(1) as u32)
    } else {
        ((size * w64 / h64).max(1) as u32, size as u32)
    }
}

/// Resize (PIL-compatible antialiased filter), center-crop, normalise: a CHW f32 tensor
/// written to `out`, which must hold 3·crop·crop values.
///
/// The result is torchvision's `Resize(resize)` then `CenterCrop(crop)`. When the resized
/// image would be large (an extreme aspect ratio: a 10000×2 image resizes to 1,280,000×256)
/// only the crop is computed: the kept window is mapped back to source coordinates and
/// resized straight to crop×crop (the filter still reads the source pixels around the
/// window, as the full resize would; values agree within one 8-bit level). Ordinary
/// images are resized whole, as before, their intermediate being at most
/// 16·resize² pixels.
pub fn preprocess_into(img: &RgbImage, p: &Preprocess, out: &mut [f32]) -> Result<()> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        bail!("image has no pixels");
    }
    let (rw, rh) = resized_dims(w, h, p.resize);
    let direct = rw as u64 * rh as u64 > 16 * (p.resize as u64).pow(2);
    resize_crop_into(img, p, direct, out)
}

fn resize_crop_into(img: &RgbImage, p: &Preprocess, direct: bool, out: &mut [f32]) -> Result<()> {
    let (w, h) = img.dimensions();
    let (rw, rh) = resized_dims(w, h, p.resize);
    let c = p.crop as u32;
    if rw < c || rh < c {
        bail!("image is smaller than the {c}x{c} crop after resizing");
    }
    // torchvision's CenterCrop rounds the offsets with Python's round(): half to even.
    let left = ((rw - c) as f64 / 2.0).round_ties_even();
    let top = ((rh - c) as f64 / 2.0).round_ties_even();
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)?;
    let filter = match p.interpolation {
        Interpolation::Bilinear => FilterType::Bilinear,
        Interpolation::Bicubic => FilterType::CatmullRom,
    };
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    if !direct {
        let mut dst = Image::new(rw, rh, PixelType::U8x3);
        Resizer::new().resize(&src, &mut dst, &opts)?;
        let (left, top, c) = (left as usize, top as usize, c as usize);
        normalise_into(dst.buffer(), rw as usize, left, top, c, false, p, out);
        return Ok(());
    }
    // The same window in the source: the resize maps output x to source x · w / rw.
    let (sx, sy) = (w as f64 / rw as f64, h as f64 / rh as f64);
    let mut dst = Image::new(c, c, PixelType::U8x3);
    Resizer::new().resize(
        &src,
        &mut dst,
        &opts.crop(left * sx, top * sy, c as f64 * sx, c as f64 * sy),
    )?;
    normalise_into(dst.buffer(), c as usize, 0, 0, c as usize, false, p, out);
    Ok(())
}

/// Writes the `c`×`c` window at (`left`, `top`) of an RGB8 buffer `width` pixels wide,
/// mirrored if `flip`, as a CHW tensor `(x / 255 − mean) / std`.
#[allow(clippy::too_many_arguments)]
fn normalise_into(
    buf: &[u8],
    width: usize,
    left: usize,
    top: usize,
    c: usize,
    flip: bool,
    p: &Preprocess,
    out: &mut [f32],
) {
    let plane = c * c;
    let scale: [f32; 3] = std::array::from_fn(|k| (1.0 / (255.0 * p.std[k])) as f32);
    let shift: [f32; 3] = std::array::from_fn(|k| (p.mean[k] / p.std[k]) as f32);
    let src: [usize; 3] = if p.bgr { [2, 1, 0] } else { [0, 1, 2] };
    for y in 0..c {
        let row = &buf[((top + y) * width + left) * 3..][..c * 3];
        for x in 0..c {
            let sx = if flip { c - 1 - x } else { x };
            for k in 0..3 {
                out[k * plane + y * c + x] = row[sx * 3 + src[k]] as f32 * scale[k] - shift[k];
            }
        }
    }
}

/// The random draws of one augmented crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Every draw of the crop derives from this seed, so a run repeats exactly.
    pub seed: u64,
    /// Strength of the colour jitter (torchvision's `ColorJitter(j, j, j)`: brightness,
    /// contrast and saturation factors uniform in [1-j, 1+j]); 0 turns it off.
    pub color_jitter: f32,
    /// Side of the square crop; `None`: the model's crop size. Progressive resizing trains
    /// on smaller crops first (the network is convolutional up to its global pooling).
    pub size: Option<usize>,
}

impl Augment {
    /// Side of the crops this draws for a model that takes `p`.
    pub fn side(&self, p: &Preprocess) -> usize {
        self.size.unwrap_or(p.crop)
    }
}

/// Training-time augmentation: torchvision's `RandomResizedCrop(side)` (area 8–100%, aspect
/// 3/4–4/3, ten tries then a center crop), a horizontal flip with probability ½ and an
/// optional colour jitter, all drawn from `a.seed`. Writes a normalised CHW tensor like
/// [`preprocess_into`].
pub fn augment_into(img: &RgbImage, p: &Preprocess, a: Augment, out: &mut [f32]) -> Result<()> {
    let seed = a.seed;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        bail!("image has no pixels");
    }
    let mut rng = crate::rng::SplitMix64(seed);
    let mut uniform = || rng.uniform();
    let area = (w * h) as f64;
    let mut bx = None;
    for _ in 0..10 {
        let target = area * (0.08 + uniform() * 0.92);
        let log_ratio = (3f64 / 4.0).ln() + uniform() * ((4f64 / 3.0).ln() - (3f64 / 4.0).ln());
        let ratio = log_ratio.exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let left = (uniform() * (w - cw + 1) as f64) as u32;
            let top = (uniform() * (h - ch + 1) as f64) as u32;
            bx = Some((left.min(w - cw), top.min(h - ch), cw, ch));
            break;
        }
    }
    let (left, top, cw, ch) = bx.unwrap_or_else(|| {
        let s = w.min(h);
        ((w - s) / 2, (h - s) / 2, s, s)
    });
    let flip = uniform() < 0.5;
    let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3)?;
    let c = a.side(p) as u32;
    let mut dst = Image::new(c, c, PixelType::U8x3);
    Resizer::new().resize(
        &src,
        &mut dst,
        &ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(left as f64, top as f64, cw as f64, ch as f64),
    )?;
    if a.color_jitter > 0.0 {
        let j = a.color_jitter.min(1.0) as f64;
        let mut factor = || 1.0 - j + 2.0 * j * uniform();
        let (b, k, s) = (factor(), factor(), factor());
        color_jitter(dst.buffer_mut(), b as f32, k as f32, s as f32);
    }
    normalise_into(dst.buffer(), c as usize, 0, 0, c as usize, flip, p, out);
    Ok(())
}

/// Brightness, contrast and saturation factors applied in that order, as torchvision's
/// functional `adjust_*` (blend with black, the mean grey, each pixel's grey; clamp to
/// 0..255), kept in floats between the steps where torchvision rounds to 8 bits; torchvision
/// also shuffles the order per image, a fixed order keeps this simpler.
fn color_jitter(rgb: &mut [u8], brightness: f32, contrast: f32, saturation: f32) {
    let grey = |p: &[f32]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let mut px: Vec<f32> = rgb
        .iter()
        .map(|&v| (v as f32 * brightness).min(255.0))
        .collect();
    let n = (px.len() / 3).max(1);
    let mean = px.chunks(3).map(grey).sum::<f32>() / n as f32;
    for v in px.iter_mut() {
        *v = (mean + contrast * (*v - mean)).clamp(0.0, 255.0);
    }
    for p in px.chunks_mut(3) {
        let g = grey(p);
        for v in p.iter_mut() {
            *v = (g + saturation * (*v - g)).clamp(0.0, 255.0);
        }
    }
    for (d, v) in rgb.iter_mut().zip(px) {
        *d = v.round() as u8;
    }
}

/// Loads and preprocesses one file into a fresh CHW vector.
pub fn load_tensor(path: &Path, p: &Preprocess) -> Result<Vec<f32>> {
    load_tensor_with(path, p, None)
}

/// Like [`load_tensor`], with training augmentation drawn from `augment` when given.
pub fn load_tensor_with(path: &Path, p: &Preprocess, augment: Option<Augment>) -> Result<Vec<f32>> {
    load_tensor_limited(path, p, augment, &Limits::default())
}

/// Like [`load_tensor_with`], refusing an image over `limits` before decoding it.
pub fn load_tensor_limited(
    path: &Path,
    p: &Preprocess,
    augment: Option<Augment>,
    limits: &Limits,
) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read file ({e})"))?;
    let resize = augment.is_none().then_some(p.resize);
    let img = decode_rgb_for(&bytes, limits, resize)?;
    let side = augment.map_or(p.crop, |a| a.side(p));
    let mut out = vec![0.0; 3 * side * side];
    match augment {
        Some(a) => augment_into(&img, p, a, &mut out)?,
        None => preprocess_into(&img, p, &mut out)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_side_resize_truncates_like_torchvision() {
        assert_eq!(resized_dims(500, 375, 256), (341, 256));
        assert_eq!(resized_dims(375, 500, 256), (256, 341));
        assert_eq!(resized_dims(256, 256, 256), (256, 256));
    }

    /// The previous way: resize the whole image, then cut the center crop out of it.
    fn full_resize_then_crop(img: &RgbImage, p: &Preprocess) -> Vec<u8> {
        let (w, h) = img.dimensions();
        let (rw, rh) = resized_dims(w, h, p.resize);
        let src = ImageRef::new(w, h, img.as_raw(), PixelType::U8x3).unwrap();
        let mut dst = Image::new(rw, rh, PixelType::U8x3);
        let filter = match p.interpolation {
            Interpolation::Bilinear => FilterType::Bilinear,
            Interpolation::Bicubic => FilterType::CatmullRom,
        };
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
        Resizer::new().resize(&src, &mut dst, &opts).unwrap();
        let c = p.crop;
        let left = ((rw as usize - c) as f64 / 2.0).round_ties_even() as usize;
        let top = ((rh as usize - c) as f64 / 2.0).round_ties_even() as usize;
        let mut out = Vec::new();
        for y in 0..c {
            out.extend_from_slice(&dst.buffer()[((top + y) * rw as usize + left) * 3..][..c * 3]);
        }
        out
    }

    #[test]
    fn only_extreme_aspect_ratios_take_the_direct_crop() {
        let p = Preprocess::lite(224);
        for (w, h) in [(640, 480), (4000, 300)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 9]));
            let mut a = vec![0.0; 3 * 224 * 224];
            let mut b = a.clone();
            preprocess_into(&img, &p, &mut a).unwrap();
            resize_crop_into(&img, &p, false, &mut b).unwrap();
            assert_eq!(a, b, "{w}x{h}: resized whole, as before");
        }
        // 10000x2: a 1,280,000-pixel-wide intermediate is never made.
        let img = RgbImage::from_pixel(10000, 2, image::Rgb([1, 2, 3]));
        let mut a = vec![0.0; 3 * 224 * 224];
        preprocess_into(&img, &p, &mut a).unwrap();
    }

    #[test]
    fn cropping_before_resizing_gives_the_full_resize_crop() {
        let mut rng = crate::rng::SplitMix64(3);
        for (w, h) in [
            (500, 375),
            (375, 500),
            (640, 480),
            (300, 1000),
            (257, 256),
            (224, 224),
        ] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                let n = (rng.uniform() * 60.0) as u32;
                image::Rgb([
                    ((x * 3 + n) % 256) as u8,
                    ((y * 5) % 256) as u8,
                    (x ^ y) as u8,
                ])
            });
            for p in [
                Preprocess::lite(224),
                Preprocess::imagenet(256, 224, Interpolation::Bicubic),
                Preprocess::imagenet(256, 224, Interpolation::Bilinear),
            ] {
                let want = full_resize_then_crop(&img, &p);
                let c = p.crop as u32;
                let mut dst = vec![0.0; 3 * p.crop * p.crop];
                resize_crop_into(&img, &p, true, &mut dst).unwrap();
                // Back from normalised floats to 8-bit levels, CHW to HWC.
                let plane = p.crop * p.crop;
                let mut worst = 0i32;
                for i in 0..plane {
                    for k in 0..3 {
                        let v = (dst[k * plane + i] as f64 * p.std[k] + p.mean[k]) * 255.0;
                        worst = worst.max((v.round() as i32 - want[i * 3 + k] as i32).abs());
                    }
                }
                assert!(worst <= 1, "{w}x{h} crop {c}: off by {worst} levels");
            }
        }
    }

    #[test]
    fn augmentation_is_seeded_and_varies() {
        let img = RgbImage::from_fn(120, 90, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, 7])
        });
        let p = Preprocess::lite(32);
        let run = |seed, color_jitter| {
            let mut out = vec![0.0; 3 * 32 * 32];
            let a = Augment {
                seed,
                color_jitter,
                size: None,
            };
            augment_into(&img, &p, a, &mut out).unwrap();
            out
        };
        assert_eq!(run(1, 0.0), run(1, 0.0));
        assert_ne!(run(1, 0.0), run(2, 0.0));
        assert_eq!(run(1, 0.4), run(1, 0.4));
        assert_ne!(run(1, 0.0), run(1, 0.4), "the jitter changes the colours");
    }

    #[test]
    fn a_smaller_crop_is_the_same_draw_at_another_size() {
        // Same seed, same box and flip: a 16-pixel crop is the 32-pixel one scaled down,
        // so their means agree closely.
        let img = RgbImage::from_fn(120, 90, |x, y| {
            image::Rgb([(x * 2) as u8, (y * 2) as u8, (x + y) as u8])
        });
        let p = Preprocess::lite(32);
        let draw = |size| Augment {
            seed: 5,
            color_jitter: 0.0,
            size,
        };
        let mut full = vec![0.0; 3 * 32 * 32];
        augment_into(&img, &p, draw(None), &mut full).unwrap();
        let mut small = vec![0.0; 3 * 16 * 16];
        augment_into(&img, &p, draw(Some(16)), &mut small).unwrap();
        assert_eq!(draw(Some(16)).side(&p), 16);
        for k in 0..3 {
            let mean = |v: &[f32], n: usize| v[k * n..(k + 1) * n].iter().sum::<f32>() / n as f32;
            let (a, b) = (mean(&full, 32 * 32), mean(&small, 16 * 16));
            assert!((a - b).abs() < 0.02, "channel {k}: {a} against {b}");
        }
    }

    #[test]
    fn color_jitter_matches_torchvision_adjustments() {
        // Brightness 1.5 then contrast 0.5 then saturation 0: grey of the contrasted pixel.
        let mut px = [100u8, 50, 0, 20, 40, 60];
        color_jitter(&mut px, 1.5, 0.5, 0.0);
        // After brightness: (150,75,0), (30,60,90); mean grey 71.66.
        // After contrast: (110.83,73.33,35.83), (50.83,65.83,80.83); greys 80.4, 63.4.
        assert_eq!(px, [80, 80, 80, 63, 63, 63]);
        let mut same = [10u8, 200, 30];
        color_jitter(&mut same, 1.0, 1.0, 1.0);
        assert_eq!(same, [10, 200, 30], "factors of 1 change nothing");
    }

    #[test]
    fn jpeg_completeness() {
        assert!(jpeg_is_complete(b"\xFF\xD8..\xFF\xDAscan\xFF\xD9"));
        assert!(!jpeg_is_complete(b"\xFF\xD8..\xFF\xDAscan data cut off"));
        // An EXIF thumbnail's EOI before the main scan does not count.
        assert!(!jpeg_is_complete(
            b"\xFF\xD8\xFF\xDAthumb\xFF\xD9\xFF\xDAmain cut"
        ));
    }

    #[test]
    fn caffe_mode_is_bgr_minus_imagenet_means() {
        let img = RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]));
        let p = Preprocess::caffe(8);
        let mut out = vec![0.0; 3 * 64];
        preprocess_into(&img, &p, &mut out).unwrap();
        assert!(
            (out[0] - (30.0 - 103.939)).abs() < 1e-3,
            "B first: {}",
            out[0]
        );
        assert!((out[64] - (20.0 - 116.779)).abs() < 1e-3);
        assert!((out[128] - (10.0 - 123.68)).abs() < 1e-3);
    }

    #[test]
    fn normalisation_maps_extremes() {
        let img = RgbImage::from_pixel(300, 300, image::Rgb([255, 0, 127]));
        let p = Preprocess::lite(224);
        let mut out = vec![0.0; 3 * 224 * 224];
        preprocess_into(&img, &p, &mut out).unwrap();
        let plane = 224 * 224;
        assert!(
            (out[0] - 1.0).abs() < 1e-5,
            "(255-127)/128 = 1, got {}",
            out[0]
        );
        assert!((out[plane] + 127.0 / 128.0).abs() < 1e-5);
        assert!(out[2 * plane].abs() < 1e-5);
    }
}
