//! Values flowing through a graph: float tensors on the device, of rank 0 to 5 (burn's
//! rank is a type parameter, so each rank is a variant), and host tensors for the shape
//! arithmetic exporters emit (Shape → Gather → Concat → Reshape), computed on the host.

use burn::prelude::*;

use super::HostTensor;

/// A float tensor of any supported rank. Rank 0 (a scalar) is held as shape `[1]`.
#[derive(Debug, Clone)]
pub enum F {
    R0(Tensor<1>),
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
}

pub const MAX_RANK: usize = 5;

/// Applies the same expression to the tensor of any variant, keeping the variant.
macro_rules! map_f {
    ($v:expr, |$t:ident| $e:expr) => {
        match $v {
            F::R0($t) => F::R0($e),
            F::R1($t) => F::R1($e),
            F::R2($t) => F::R2($e),
            F::R3($t) => F::R3($e),
            F::R4($t) => F::R4($e),
            F::R5($t) => F::R5($e),
        }
    };
}
pub(crate) use map_f;

/// Evaluates an expression on the tensor of any variant.
macro_rules! with_f {
    ($v:expr, |$t:ident| $e:expr) => {
        match $v {
            F::R0($t) => $e,
            F::R1($t) => $e,
            F::R2($t) => $e,
            F::R3($t) => $e,
            F::R4($t) => $e,
            F::R5($t) => $e,
        }
    };
}

impl F {
    pub fn rank(&self) -> usize {
        match self {
            F::R0(_) => 0,
            F::R1(_) => 1,
            F::R2(_) => 2,
            F::R3(_) => 3,
            F::R4(_) => 4,
            F::R5(_) => 5,
        }
    }

    /// The logical shape (`[]` for a scalar).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            F::R0(_) => vec![],
            other => with_f!(other, |t| t.dims().to_vec()),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn device(&self) -> Device {
        with_f!(self, |t| t.device())
    }

    /// The same values in `dims` (whose product the caller has checked).
    pub fn reshape(self, dims: &[usize]) -> F {
        fn arr<const N: usize>(d: &[usize]) -> [usize; N] {
            std::array::from_fn(|i| d[i])
        }
        if self.numel() == 0 || dims.contains(&0) {
            // burn cannot infer a reshape of an empty tensor: make the empty one directly.
            return F::zeros(dims, &self.device());
        }
        let flat: Tensor<1> = with_f!(self, |t| t.reshape([-1]));
        match dims.len() {
            0 => F::R0(flat.reshape([1])),
            1 => F::R1(flat.reshape(arr::<1>(dims))),
            2 => F::R2(flat.reshape(arr::<2>(dims))),
            3 => F::R3(flat.reshape(arr::<3>(dims))),
            4 => F::R4(flat.reshape(arr::<4>(dims))),
            _ => F::R5(flat.reshape(arr::<5>(dims))),
        }
    }

    /// Zeros of shape `dims` (rank 0 to 5).
    pub fn zeros(dims: &[usize], device: &Device) -> F {
        fn arr<const N: usize>(d: &[usize]) -> [usize; N] {
            std::array::from_fn(|i| d[i])
        }
        match dims.len() {
            0 => F::R0(Tensor::zeros([1], device)),
            1 => F::R1(Tensor::zeros(arr::<1>(dims), device)),
            2 => F::R2(Tensor::zeros(arr::<2>(dims), device)),
            3 => F::R3(Tensor::zeros(arr::<3>(dims), device)),
            4 => F::R4(Tensor::zeros(arr::<4>(dims), device)),
            _ => F::R5(Tensor::zeros(arr::<5>(dims), device)),
        }
    }

    /// Adds leading unit dimensions up to `rank` (numpy broadcasting aligns from the right).
    pub fn lift(self, rank: usize) -> F {
        if self.rank() >= rank {
            return self;
        }
        let mut dims = vec![1; rank - self.rank()];
        dims.extend(self.shape());
        self.reshape(&dims)
    }

    pub fn from_host(t: &HostTensor, device: &Device) -> F {
        let data = t.as_floats();
        let flat = Tensor::<1>::from_data(TensorData::new(data, [t.numel()]), device);
        F::R1(flat).reshape(&t.shape)
    }

    /// The values, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        with_f!(self.clone(), |t| t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default())
    }

    /// Packs into the rank-4 tensor a stage boundary carries: `[n, c, h, w]` as is, a
    /// vector `[n, d]` as `[n, d, 1, 1]`, a token sequence `[n, t, d]` as `[n, d, t, 1]`
    /// (its width as channels: pooling averages the tokens); other ranks with trailing
    /// unit dimensions, rank 5 with its last two dimensions merged.
    pub fn into_r4(self) -> Tensor<4> {
        match self {
            F::R4(t) => t,
            F::R3(t) => {
                let [n, tokens, d] = t.dims();
                t.swap_dims(1, 2).reshape([n, d, tokens, 1])
            }
            other => {
                let mut d = other.shape();
                if d.len() > 4 {
                    // Rank 5: the trailing dimensions merged.
                    let tail: usize = d[3..].iter().product();
                    d.truncate(3);
                    d.push(tail);
                }
                d.resize(4, 1);
                match other.reshape(&d) {
                    F::R4(t) => t,
                    _ => unreachable!("reshaped to rank 4"),
                }
            }
        }
    }

    /// The inverse of [`into_r4`](Self::into_r4) for a value of `shape`'s rank, with the
    /// batch taken from `x`.
    pub fn from_r4(x: Tensor<4>, shape: &[usize]) -> F {
        let mut dims = shape.to_vec();
        if let Some(n) = dims.first_mut() {
            *n = x.dims()[0];
        }
        if let [n, tokens, d] = dims[..] {
            return F::R3(x.reshape([n, d, tokens]).swap_dims(1, 2));
        }
        F::R4(x).reshape(&dims)
    }
}

/// A value in a running graph. (Host values are few and short-lived: boxing the tensor
/// variant would cost an allocation per op for nothing.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Value {
    F(F),
    Host(HostTensor),
}

impl Value {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Value::F(f) => f.shape(),
            Value::Host(h) => h.shape.clone(),
        }
    }
}
