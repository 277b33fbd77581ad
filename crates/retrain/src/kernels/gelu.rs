//! The exact GELU, `x · Φ(x) = x · (1 + erf(x / √2)) / 2`, and its derivative
//! `Φ(x) + x · φ(x)`, in arithmetic the compiler vectorises: no libm call per element
//! (a scalar `erff` was 8% of a ConvNeXt training step).
//!
//! erf is Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7), the form
//! PyTorch's own vectorised CPU GELU uses (`Vectorized<float>::erf`); the `exp(-x²/2)`
//! it needs is φ's as well, computed once by [`exp_nonpositive`], which SiLU's sigmoid
//! uses too.

/// `exp(y)` for `y ≤ 0`, relative error about 1e-7: `2^n · e^r` with `n = round(y / ln 2)`
/// and `|r| ≤ ln 2 / 2`, `e^r` by its degree-7 Taylor polynomial (truncation below 6e-9).
/// Below -87 (where `exp` leaves f32's normal range) it is 0 or a denormal-free tiny
/// value; the callers multiply it by values that make that 0.
#[inline(always)]
fn exp_nonpositive(y: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n · LN2_HI` is exact (Cody and Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let y = y.max(-87.0);
    let k = y * LOG2E + ROUND;
    let n = k - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n from its exponent bits: n is in [-126, 0] here. `k`'s bits are those of
    // 1.5 · 2^23 plus n (its unit is 1), so n comes from them by integer arithmetic that
    // vectorises (a float-to-int `as` is a scalar, NaN-checked conversion per lane).
    let n_bits = k.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    p * scale
}

/// `(Φ(x), e)` with `e = exp(-x²/2)` (φ(x) is `e / √(2π)`), from that one exponential:
/// `erf(z) = 1 - (a1 t + … + a5 t⁵) · e^{-z²}` for `z = |x| / √2 ≥ 0`, `t = 1 / (1 + p z)`,
/// and `e^{-z²}` is `e`.
#[inline(always)]
fn cdf_and_density(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_8;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let e = exp_nonpositive(-0.5 * x * x);
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let erf_abs = 1.0 - poly * e;
    let erf = if x < 0.0 { -erf_abs } else { erf_abs };
    (0.5 * (1.0 + erf), e)
}

/// The logistic sigmoid `1 / (1 + e^-x)` from [`exp_nonpositive`] of `-|x|` (SiLU's, in
/// the same vectorised arithmetic; libm's `expf` per element kept SiLU's loops scalar).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x < 0.0 { e * s } else { s }
}

/// `x · Φ(x)`.
#[inline(always)]
pub fn value(x: f32) -> f32 {
    x * cdf_and_density(x).0
}

/// `Φ(x) + x · φ(x)`, φ the standard normal density.
#[inline(always)]
pub fn derivative(x: f32) -> f32 {
    // 1 / √(2π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let (cdf, e) = cdf_and_density(x);
    cdf + x * e * INV_SQRT_2PI
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Maclaurin series (|x| ≤ 3) or its continued fraction (beyond):
    /// a reference independent of the approximation.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a <= 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{-a²}/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + …)))).
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        v.copysign(x)
    }

    #[test]
    fn exp_is_within_two_ulps_over_its_range() {
        let mut y = 0.0f32;
        while y > -87.0 {
            let want = (y as f64).exp();
            let got = exp_nonpositive(y) as f64;
            assert!(
                (got - want).abs() <= 2.5e-7 * want,
                "exp({y}) = {got}, want {want}"
            );
            y -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e4) < 1e-37);
    }

    /// GELU and its derivative against f64 references, within 2e-7 absolute plus f32
    /// rounding of the value, on a fine grid over [-12, 12] and in the tails.
    #[test]
    fn gelu_and_its_derivative_equal_the_definition() {
        let mut worst = (0.0f64, 0.0f64);
        let mut x = -12.0f32;
        let mut xs = vec![-1e4f32, -50.0, 50.0, 1e4];
        while x <= 12.0 {
            xs.push(x);
            x += 0.001_37;
        }
        for x in xs {
            let xd = x as f64;
            let cdf = 0.5 * (1.0 + erf64(xd / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (v, d) = (xd * cdf, cdf + xd * pdf);
            let dv = (value(x) as f64 - v).abs() / (1.0 + v.abs());
            let dd = (derivative(x) as f64 - d).abs() / (1.0 + d.abs());
            worst = (worst.0.max(dv), worst.1.max(dd));
            assert!(dv <= 3e-7, "gelu({x}) = {}, want {v}", value(x));
            assert!(dd <= 3e-7, "gelu'({x}) = {}, want {d}", derivative(x));
        }
        eprintln!("worst: value {:.1e}, derivative {:.1e}", worst.0, worst.1);
        assert!(value(f32::NAN).is_nan());
    }
}
