//! Running a kernel's loops with the CPU's vector instructions.
//!
//! The crate is compiled for the baseline x86-64 (SSE2), so that one binary runs on any
//! x86-64 CPU; its loops then vectorise 4 lanes wide. [`vectorized`] runs a closure
//! compiled again for AVX-512 or AVX2 + FMA, when the CPU has them (detected once), as
//! burn-flex's and gemm's own kernels do. The closure and what it calls must be
//! `#[inline(always)]` (iterator adapters are inlined anyway) to be compiled with them.

/// `f()`, compiled for the widest vector instructions the CPU has.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn v4<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn v3<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level() {
            // SAFETY: `level` found these instruction sets on this CPU.
            Level::V4 => return unsafe { v4(f) },
            // SAFETY: as above.
            Level::V3 => return unsafe { v3(f) },
            Level::Baseline => {}
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Level {
    Baseline,
    V3,
    V4,
}

#[cfg(target_arch = "x86_64")]
fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let v3 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if v3 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            Level::V4
        } else if v3 {
            Level::V3
        } else {
            Level::Baseline
        }
    })
}

/// `evens[i] = f(src[2i])` and `odds[i] = f(src[2i + 1])`, `src` holding `2 · odds.len()`
/// values, or one more, the last even one: whole pairs, so that the loop vectorises as one
/// de-interleave, then the last value alone.
#[inline(always)]
pub(crate) fn deinterleave(
    evens: &mut [f32],
    odds: &mut [f32],
    src: &[f32],
    f: impl Fn(f32) -> f32,
) {
    let pairs = odds.len();
    let (body, last) = evens.split_at_mut(pairs);
    let both = body.iter_mut().zip(odds.iter_mut());
    for ((e, o), p) in both.zip(src[..2 * pairs].chunks_exact(2)) {
        *e = f(p[0]);
        *o = f(p[1]);
    }
    if let Some(last) = last.first_mut() {
        *last = f(src[2 * pairs]);
    }
}

/// Defines a function whose body runs compiled for AVX2 + FMA when the CPU has them (as
/// [`vectorized`]), in a function of its own whose slice arguments LLVM takes not to
/// overlap: a loop over several slices of one buffer, inlined into its caller, ran its
/// scalar version behind a run-time check that they do not overlap (or stayed scalar).
macro_rules! disjoint {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[inline(never)]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if $crate::kernels::simd::has_avx2() {
                    // SAFETY: the CPU has AVX2 and FMA (`has_avx2`).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use disjoint;

/// Whether the CPU has AVX2 and FMA (detected once).
#[inline(always)]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return !matches!(level(), Level::Baseline);
    #[cfg(not(target_arch = "x86_64"))]
    false
}

disjoint! {
    /// `p0[i] = src[4i]`, `p1[i] = src[4i + 1]`, … for the `p0.len()` values of each phase
    /// (`src` holding 4 of them each): one loop over whole groups of 4, which vectorises as
    /// one 4-way de-interleave.
    pub(crate) fn split4(
        src: &[f32],
        p0: &mut [f32],
        p1: &mut [f32],
        p2: &mut [f32],
        p3: &mut [f32],
    ) {
        let n = p0.len();
        let (p1, p2, p3, src) = (&mut p1[..n], &mut p2[..n], &mut p3[..n], &src[..4 * n]);
        let phases = p0.iter_mut().zip(p1).zip(p2).zip(p3);
        for ((((a, b), c), d), s) in phases.zip(src.chunks_exact(4)) {
            (*a, *b, *c, *d) = (s[0], s[1], s[2], s[3]);
        }
    }
}

/// `dst[i] = src[2i]`, `src` holding at least `2 · dst.len() - 1` values (a stride-2
/// window's row): whole pairs, so that the loop vectorises as one de-interleave (an indexed
/// or `chunks(2)` loop stays scalar), then the last value alone, as its pair may end past
/// `src`.
#[inline(always)]
pub(crate) fn every_second(dst: &mut [f32], src: &[f32]) {
    let Some((last, body)) = dst.split_last_mut() else {
        return;
    };
    let pairs = body.len();
    for (d, p) in body.iter_mut().zip(src[..2 * pairs].chunks_exact(2)) {
        *d = p[0];
    }
    *last = src[2 * pairs];
}
