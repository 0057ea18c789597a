//! The `larder` binary: everything lives in the library; see [`larder::cli`].

fn main() -> std::process::ExitCode {
    larder::cli::main()
}
