fn main() {
    std::process::exit(retrain::cli::main());
}
