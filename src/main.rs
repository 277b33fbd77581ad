fn main() {
    retrain::tune_allocator();
    std::process::exit(retrain::cli::main());
}
