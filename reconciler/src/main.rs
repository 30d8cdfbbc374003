//! The `tenancy` binary: everything lives in the library; this is the process edge.

fn main() -> std::process::ExitCode {
    tenancy::cli::run()
}
