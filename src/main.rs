fn main() {
    // Die quietly on a closed pipe (`retrain predict … | head`), as Unix tools do, rather
    // than panic on the next write to stdout.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    retrain::tune_allocator();
    std::process::exit(retrain::cli::main());
}
