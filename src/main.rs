//! The `retrain` program: flags ([`cli`]), commands ([`commands`]) and what the terminal
//! shows ([`terminal`]), over the `retrain` library.

mod cli;
mod commands;
mod terminal;

fn main() {
    // Die quietly on a closed pipe (`retrain predict … | head`), as Unix tools do, rather
    // than panic on the next write to stdout.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    retrain::tune_allocator();
    std::process::exit(cli::main());
}
