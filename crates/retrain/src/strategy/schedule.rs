//! Learning rates over a run: per step (warm-up and cosine decay, or one-cycle) and per
//! stage (discriminative fine-tuning).

/// Learning rate at `step` of `total`: linear warm-up then cosine decay to zero.
pub fn cosine_lr(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = (step - warmup) as f64 / span;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Learning rate at `step` of `total` under PyTorch's one-cycle policy (defaults
/// `pct_start` 0.3, `div_factor` 25, `final_div_factor` 1e4, cosine annealing).
pub fn one_cycle_lr(base: f64, step: usize, total: usize) -> f64 {
    let (start, end) = (base / 25.0, base / 25.0 / 1e4);
    let rise = (0.3 * total as f64 - 1.0).max(1.0);
    let fall = (total as f64 - 1.0 - rise).max(1.0);
    let anneal = |from: f64, to: f64, t: f64| {
        to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t.clamp(0.0, 1.0)).cos())
    };
    let s = step as f64;
    if s <= rise {
        anneal(start, base, s / rise)
    } else {
        anneal(base, end, (s - rise) / fall)
    }
}

/// The learning-rate factor of each trainable stage: `ratio` for the first, rising
/// geometrically to 1 for the last (the head always trains at the full rate).
pub fn stage_lr_factors(stages: usize, ratio: f64) -> Vec<f64> {
    if stages <= 1 {
        return vec![1.0; stages];
    }
    (0..stages)
        .map(|i| ratio.powf(1.0 - i as f64 / (stages - 1) as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((cosine_lr(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!(cosine_lr(1.0, 55, 100, 10) < 0.51 && cosine_lr(1.0, 55, 100, 10) > 0.49);
        assert!(cosine_lr(1.0, 99, 100, 10) < 0.01);
    }

    #[test]
    fn one_cycle_rises_then_falls_like_pytorch() {
        // torch.optim.lr_scheduler.OneCycleLR(max_lr=1, total_steps=100): 0.04 at step 0,
        // 1.0 at step 29, 0.5000... near step 64, 4e-6 at step 99.
        assert!((one_cycle_lr(1.0, 0, 100) - 0.04).abs() < 1e-12);
        assert!((one_cycle_lr(1.0, 29, 100) - 1.0).abs() < 1e-12);
        assert!((one_cycle_lr(1.0, 99, 100) - 4e-6).abs() < 1e-12);
        assert!(one_cycle_lr(1.0, 64, 100) > 0.45 && one_cycle_lr(1.0, 64, 100) < 0.55);
    }

    #[test]
    fn stage_factors_rise_geometrically_to_one() {
        let f = stage_lr_factors(3, 0.01);
        assert!((f[0] - 0.01).abs() < 1e-12);
        assert!((f[1] - 0.1).abs() < 1e-12);
        assert!((f[2] - 1.0).abs() < 1e-12);
        assert_eq!(stage_lr_factors(1, 0.1), vec![1.0]);
        assert!(stage_lr_factors(0, 0.1).is_empty());
    }
}
