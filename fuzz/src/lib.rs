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
