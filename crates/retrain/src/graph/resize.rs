//! ONNX `Resize` (opsets 10–19+) and `Upsample` (7–9): interpolation along any axes, as
//! ONNX's reference defines it (`onnx/reference/ops/op_resize.py`).
//!
//! Every mode is separable, so each resized axis is a matrix (out × in) of interpolation
//! weights, built on the host from the sizes alone and applied with a matmul: one code path
//! for nearest, linear and cubic, every coordinate transformation, `exclude_outside` and
//! antialiasing, and autodiff through it for free (the gradient of a matmul).

use super::value::F;
use super::{HostTensor, Node};

type R<T> = Result<T, String>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Nearest(NearestMode),
    Linear,
    /// Cubic convolution with this `a` (`cubic_coeff_a`).
    Cubic(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Coordinates {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// A compiled `Resize` or `Upsample` node.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub mode: Mode,
    pub coordinates: Coordinates,
    pub exclude_outside: bool,
    pub extrapolation: f64,
    pub antialias: bool,
    /// The axes `scales`, `sizes` and `roi` refer to (opset 18); all when `None`.
    pub axes: Option<Vec<i64>>,
    pub aspect: AspectPolicy,
    /// Where the scales are: `Upsample` 7's attribute, or an input at this index.
    pub scales: Scales,
    /// Whether the node has `roi` and `sizes` inputs (opset 11 on).
    pub roi_and_sizes: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    Attribute(Vec<f32>),
    Input(usize),
}

impl Resize {
    pub fn compile(node: &Node, opset: i64) -> R<Self> {
        let upsample = node.op == "Upsample";
        // Upsample and Resize 10 map output to input coordinates as x / scale and take the
        // nearest pixel below (repeating pixels for an integer scale).
        let legacy = upsample || opset < 11;
        let nearest = if legacy {
            NearestMode::Floor
        } else {
            match node.string("nearest_mode").unwrap_or("round_prefer_floor") {
                "round_prefer_floor" => NearestMode::RoundPreferFloor,
                "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                "floor" => NearestMode::Floor,
                "ceil" => NearestMode::Ceil,
                other => return Err(format!("nearest_mode {other} is not supported")),
            }
        };
        let mode = match node.string("mode").unwrap_or("nearest") {
            "nearest" => Mode::Nearest(nearest),
            "linear" | "bilinear" => Mode::Linear,
            "cubic" if !legacy => Mode::Cubic(node.float("cubic_coeff_a").unwrap_or(-0.75) as f64),
            other => return Err(format!("mode {other} is not supported")),
        };
        let coordinates = if legacy {
            Coordinates::Asymmetric
        } else {
            match node
                .string("coordinate_transformation_mode")
                .unwrap_or("half_pixel")
            {
                "half_pixel" => Coordinates::HalfPixel,
                "half_pixel_symmetric" => Coordinates::HalfPixelSymmetric,
                "pytorch_half_pixel" => Coordinates::PytorchHalfPixel,
                "align_corners" => Coordinates::AlignCorners,
                "asymmetric" => Coordinates::Asymmetric,
                "tf_crop_and_resize" => Coordinates::TfCropAndResize,
                other => {
                    return Err(format!(
                        "coordinate_transformation_mode {other} is not supported"
                    ));
                }
            }
        };
        let aspect = match node.string("keep_aspect_ratio_policy").unwrap_or("stretch") {
            "stretch" => AspectPolicy::Stretch,
            "not_larger" => AspectPolicy::NotLarger,
            "not_smaller" => AspectPolicy::NotSmaller,
            other => return Err(format!("keep_aspect_ratio_policy {other} is not supported")),
        };
        let antialias = node.int("antialias").unwrap_or(0) != 0;
        if antialias && matches!(mode, Mode::Nearest(_)) {
            return Err("antialias with mode nearest is not defined".into());
        }
        let scales = match node.attrs.get("scales") {
            Some(super::Attr::Floats(s)) if upsample && opset < 9 => Scales::Attribute(s.clone()),
            _ if upsample && opset < 9 => return Err("Upsample without scales".into()),
            _ if legacy => Scales::Input(1),
            _ => Scales::Input(2),
        };
        Ok(Resize {
            mode,
            coordinates,
            exclude_outside: node.int("exclude_outside").unwrap_or(0) != 0,
            extrapolation: node.float("extrapolation_value").unwrap_or(0.0) as f64,
            antialias,
            axes: node.ints("axes").map(<[i64]>::to_vec),
            aspect,
            scales,
            roi_and_sizes: !legacy,
        })
    }

    /// Resizes `x`. `input(i)` reads the node's optional input `i` (roi, scales, sizes)
    /// as a constant; an empty one counts as absent.
    pub fn run(&self, x: F, input: impl Fn(usize) -> R<Option<HostTensor>>) -> R<F> {
        let shape = x.shape();
        let rank = shape.len();
        let given = |i: usize| -> R<Option<HostTensor>> { Ok(input(i)?.filter(|t| t.numel() > 0)) };
        let axes: Vec<usize> = match &self.axes {
            None => (0..rank).collect(),
            Some(a) => {
                let mut seen = vec![false; rank];
                a.iter()
                    .map(|&ax| {
                        let n = if ax < 0 { ax + rank as i64 } else { ax };
                        if !(0..rank as i64).contains(&n)
                            || std::mem::replace(&mut seen[n as usize], true)
                        {
                            return Err(format!("axes {a:?} are not distinct axes of rank {rank}"));
                        }
                        Ok(n as usize)
                    })
                    .collect::<R<_>>()?
            }
        };
        let scales = match &self.scales {
            Scales::Attribute(s) => Some(s.iter().map(|&v| v as f64).collect::<Vec<_>>()),
            Scales::Input(i) => {
                given(*i)?.map(|t| t.as_floats().iter().map(|&v| v as f64).collect())
            }
        };
        let sizes = if self.roi_and_sizes {
            given(3)?.map(|t| t.as_ints())
        } else {
            None
        };
        let roi = if self.roi_and_sizes {
            given(1)?.map(|t| t.as_floats())
        } else {
            None
        };
        // Per axis of `x`: the scale, and the output length.
        let mut scale = vec![1.0f64; rank];
        let mut out = shape.clone();
        match (sizes, scales) {
            (Some(sizes), _) => {
                if sizes.len() != axes.len() {
                    return Err(format!("{} sizes for {} axes", sizes.len(), axes.len()));
                }
                for (&a, &s) in axes.iter().zip(&sizes) {
                    if s < 0 || s > super::ops::MAX_ELEMENTS as i64 {
                        return Err(format!("size {s} is out of range"));
                    }
                    out[a] = s as usize;
                    scale[a] = s as f64 / shape[a] as f64;
                }
                if self.aspect != AspectPolicy::Stretch {
                    let pick = axes.iter().map(|&a| scale[a]);
                    let s = if self.aspect == AspectPolicy::NotLarger {
                        pick.fold(f64::INFINITY, f64::min)
                    } else {
                        pick.fold(0.0, f64::max)
                    };
                    for &a in &axes {
                        scale[a] = s;
                        out[a] = (s * shape[a] as f64 + 0.5) as usize;
                    }
                }
            }
            (None, Some(scales)) => {
                if scales.len() != axes.len() {
                    return Err(format!("{} scales for {} axes", scales.len(), axes.len()));
                }
                for (&a, &s) in axes.iter().zip(&scales) {
                    let len = s * shape[a] as f64;
                    // NaN fails both ranges.
                    if !((f64::MIN_POSITIVE..=f64::MAX).contains(&s)
                        && (0.0..=super::ops::MAX_ELEMENTS as f64).contains(&len))
                    {
                        return Err(format!("scale {s} is out of range"));
                    }
                    scale[a] = s;
                    out[a] = len as usize;
                }
            }
            (None, None) => return Err("Resize needs scales or sizes".into()),
        }
        super::ops::check_numel(&out)?;
        if out.contains(&0) {
            return Ok(F::zeros(&out, &x.device()));
        }
        let mut region = vec![(0.0f64, 1.0f64); rank];
        if let (Some(roi), Coordinates::TfCropAndResize) = (&roi, self.coordinates) {
            if roi.len() != 2 * axes.len() {
                return Err(format!(
                    "roi has {} values for {} axes",
                    roi.len(),
                    axes.len()
                ));
            }
            for (i, &a) in axes.iter().enumerate() {
                region[a] = (roi[i] as f64, roi[axes.len() + i] as f64);
            }
        } else if self.coordinates == Coordinates::TfCropAndResize {
            return Err("tf_crop_and_resize without roi".into());
        }
        if shape.iter().zip(&out).any(|(&i, &o)| i == 0 && o > 0) {
            return Err("cannot resize an empty axis".into());
        }
        let mut y = x;
        // Outputs outside a crop region, per axis (tf_crop_and_resize).
        let mut outside: Vec<Vec<bool>> = vec![];
        for a in 0..rank {
            let (m, out_of_region) = self.matrix(shape[a], out[a], scale[a], region[a]);
            if out[a] == shape[a] && is_identity(&m, out[a]) && !out_of_region.contains(&true) {
                outside.push(vec![false; out[a]]);
                continue;
            }
            y = along_axis(y, a, m, shape[a], out[a]);
            outside.push(out_of_region);
        }
        if self.extrapolation != 0.0 && outside.iter().flatten().any(|&o| o) {
            // Outputs outside the region are zero columns of their matrices: add the value.
            let numel: usize = out.iter().product();
            let mut fill = vec![0.0f32; numel];
            for (k, v) in fill.iter_mut().enumerate() {
                let mut rest = k;
                let mut off = false;
                for a in (0..rank).rev() {
                    off |= outside[a][rest % out[a]];
                    rest /= out[a];
                }
                if off {
                    *v = self.extrapolation as f32;
                }
            }
            let device = y.device();
            let fill = F::from_host(
                &HostTensor {
                    shape: out.clone(),
                    data: super::HostData::Float(fill),
                },
                &device,
            );
            y = super::ops::add_f(y, fill)?;
        }
        Ok(y)
    }

    /// The weights of one axis as the (in × out) matrix a row of inputs multiplies,
    /// row-major, and which outputs fall outside the crop region (their columns are zero).
    fn matrix(&self, len: usize, out: usize, scale: f64, roi: (f64, f64)) -> (Vec<f32>, Vec<bool>) {
        let mut m = vec![0.0f64; len * out];
        let mut outside = vec![false; out];
        let (n_in, width) = (len as f64, scale * len as f64);
        for x in 0..out {
            let xf = x as f64;
            let ori = match self.coordinates {
                Coordinates::AlignCorners if width == 1.0 => 0.0,
                Coordinates::AlignCorners => xf * (n_in - 1.0) / (width - 1.0),
                Coordinates::Asymmetric => xf / scale,
                Coordinates::TfCropAndResize => {
                    let span = (roi.1 - roi.0) * (n_in - 1.0);
                    let at = if width == 1.0 {
                        span / 2.0
                    } else {
                        xf * span / (width - 1.0)
                    } + roi.0 * (n_in - 1.0);
                    if at < 0.0 || at > n_in - 1.0 {
                        outside[x] = true;
                        continue;
                    }
                    at
                }
                Coordinates::PytorchHalfPixel if width == 1.0 => -0.5,
                Coordinates::PytorchHalfPixel | Coordinates::HalfPixel => (xf + 0.5) / scale - 0.5,
                Coordinates::HalfPixelSymmetric => {
                    let adjustment = out as f64 / width;
                    let offset = n_in / 2.0 * (1.0 - adjustment);
                    offset + (xf + 0.5) / scale - 0.5
                }
            };
            // The neighbours lie left of `ori` first: `ratio` is in (0, 1].
            let ratio = if ori.fract() == 0.0 {
                1.0
            } else {
                ori - ori.floor()
            };
            let base = (ori - ratio).round() as i64;
            let mut c = self.coefficients(ratio, scale);
            let first = base - (c.len() as i64 / 2 - 1);
            let index = |k: usize| first + k as i64;
            if self.exclude_outside {
                for (k, w) in c.iter_mut().enumerate() {
                    if !(0..len as i64).contains(&index(k)) {
                        *w = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                if sum != 0.0 {
                    c.iter_mut().for_each(|w| *w /= sum);
                }
            }
            for (k, w) in c.iter().enumerate() {
                // Beyond the edges the edge pixel repeats.
                let i = index(k).clamp(0, len as i64 - 1) as usize;
                m[i * out + x] += w;
            }
        }
        (m.into_iter().map(|w| w as f32).collect(), outside)
    }

    /// The weights of the neighbours of a point `ratio` right of the first of the middle
    /// two (nearest and linear: two neighbours; cubic: four; antialiased: more, when
    /// downsampling).
    fn coefficients(&self, ratio: f64, scale: f64) -> Vec<f64> {
        let whole = ratio == 1.0;
        match self.mode {
            Mode::Nearest(mode) => {
                let right = whole
                    || match mode {
                        NearestMode::RoundPreferFloor => ratio > 0.5,
                        NearestMode::RoundPreferCeil => ratio >= 0.5,
                        NearestMode::Floor => false,
                        NearestMode::Ceil => true,
                    };
                if right {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                }
            }
            Mode::Linear if !self.antialias => vec![1.0 - ratio, ratio],
            Mode::Linear => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                normalised(
                    (start..start + footprint)
                        .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                        .collect(),
                )
            }
            Mode::Cubic(a) if !self.antialias => {
                let (r, q) = (ratio, 1.0 - ratio);
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
                ]
            }
            Mode::Cubic(a) => {
                let s = scale.min(1.0);
                let start = (-2.0 / s).floor() as i64 + 1;
                let kernel = |x: f64| {
                    let x = x.abs();
                    let (x2, x3) = (x * x, x * x * x);
                    if x <= 1.0 {
                        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                    } else if x < 2.0 {
                        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                normalised(
                    (start..2 - start)
                        .map(|i| kernel(s * (i as f64 - ratio)))
                        .collect(),
                )
            }
        }
    }
}

fn normalised(c: Vec<f64>) -> Vec<f64> {
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|w| w / sum).collect()
}

fn is_identity(m: &[f32], n: usize) -> bool {
    (0..n).all(|i| (0..n).all(|j| m[i * n + j] == if i == j { 1.0 } else { 0.0 }))
}

/// Resizes axis `a` of `x` (length `len`) to `out` with the (len × out) matrix `m`.
fn along_axis(x: F, a: usize, m: Vec<f32>, len: usize, out: usize) -> F {
    let shape = x.shape();
    let rank = shape.len();
    // The axis last, the others flattened into rows.
    let mut perm: Vec<usize> = (0..rank).filter(|&i| i != a).collect();
    perm.push(a);
    let moved = super::ops::transpose_f(x, &perm);
    let rows: usize = perm[..rank - 1].iter().map(|&i| shape[i]).product();
    let device = moved.device();
    let flat = moved.reshape(&[rows, len]);
    // (rows × len) · (len × out).
    let m = F::from_host(
        &HostTensor {
            shape: vec![len, out],
            data: super::HostData::Float(m),
        },
        &device,
    );
    let y = match (flat, m) {
        (F::R2(p), F::R2(q)) => F::R2(p.matmul(q)),
        (p, q) => unreachable!("reshaped to rank 2: {:?} {:?}", p.shape(), q.shape()),
    };
    let mut moved_shape: Vec<usize> = perm[..rank - 1].iter().map(|&i| shape[i]).collect();
    moved_shape.push(out);
    let y = y.reshape(&moved_shape);
    // Back: the inverse permutation.
    let mut back = vec![0; rank];
    for (i, &p) in perm.iter().enumerate() {
        back[p] = i;
    }
    super::ops::transpose_f(y, &back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Attr, HostData};
    use burn::prelude::*;

    /// A linear 2x upsampling (half_pixel): the values ONNX's reference gives, and the
    /// gradient of their sum, each input's total weight, through the matmuls.
    #[test]
    fn linear_upsampling_matches_the_reference_and_trains() {
        let node = Node {
            name: "up".into(),
            op: "Resize".into(),
            inputs: vec!["x".into(), String::new(), "scales".into()],
            outputs: vec!["y".into()],
            attrs: [("mode".to_owned(), Attr::String("linear".into()))].into(),
        };
        let r = Resize::compile(&node, 13).unwrap();
        let device = Device::default().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 3.0], [1, 1, 1, 2]), &device)
            .require_grad();
        let scales = HostTensor {
            shape: vec![4],
            data: HostData::Float(vec![1.0, 1.0, 2.0, 2.0]),
        };
        let y = r
            .run(F::R4(x.clone()), |i| Ok((i == 2).then(|| scales.clone())))
            .unwrap();
        assert_eq!(y.shape(), vec![1, 1, 2, 4]);
        assert_eq!(y.to_vec(), vec![1.0, 1.5, 2.5, 3.0, 1.0, 1.5, 2.5, 3.0]);
        let F::R4(y) = y else { panic!("rank 4") };
        let grads = y.sum().backward();
        let g = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(g, vec![4.0, 4.0]);
    }
}
